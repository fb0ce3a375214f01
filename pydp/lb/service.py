"""Services on a running dataplane: add, set, drain, remove, show, preview.

One function per action. The control socket (``pydp run`` registers
:meth:`Services.register`) and the CLI (``pydp service ...``) call these,
so a change from another process is validated, previewed and published
exactly as one from Python. Every change is committed whole to the lb stage
(built on the control thread, published with RCU: no packet is lost) and
answers with what it moved: Maglev buckets and live flows, computed before
the commit. Flows keep their backend for their whole life, so "moved" flows
are the ones whose bucket now names another backend; they stay pinned.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import AlreadyExists, ConfigError, InvalidArgument, NotFound
from . import table
from .model import STATES, Backend, Service, parse_backend_name


class Services:
    """The services of one lb stage of a :class:`pydp.Dataplane`."""

    def __init__(self, dp: Any, stage: str | None = None) -> None:
        """Take the stage's services (from its pipeline definition) as the live set."""
        self.dp = dp
        names = [s.name for s in dp.pipeline.stages if s.TYPE == "lb"]
        if not names:
            raise InvalidArgument(f"pipeline '{dp.pipeline.name}' has no lb stage")
        if stage is None:
            if len(names) > 1:
                raise InvalidArgument(f"several lb stages ({', '.join(names)}): name one")
            stage = names[0]
        if stage not in names:
            raise InvalidArgument(f"no lb stage '{stage}' (lb stages: {', '.join(names)})")
        self.stage = stage
        self.services: list[Service] = list(dp.pipeline.stage(stage).service_objects())
        self.ids: dict[str, dict[str, int]] = {}
        self._commit(self.services)
        # the live set: trace and counters (pydp.table_stats) name ids from it
        dp.services.setdefault("lb", {})[stage] = self

    # -- plumbing -------------------------------------------------------------------------
    @property
    def _idx(self) -> int:
        if self.dp._cp is None:
            raise InvalidArgument("the dataplane is closed")
        return self.dp.stage_index[self.stage]

    def _commit(self, new: list[Service]) -> dict[str, dict[str, int]]:
        changes = table.preview(self.dp._cp, self._idx, new)
        self.ids = table.commit(self.dp._cp, self._idx, new)
        self.services = new
        return changes

    def _find(self, services: list[Service], name: str) -> Service:
        for s in services:
            if s.name == name:
                return s
        raise NotFound(f"no service '{name}' (services: "
                       f"{', '.join(s.name for s in services) or 'none'})")

    def _change(self, fn: Any, dry_run: bool) -> dict:
        new = copy.deepcopy(self.services)
        what = fn(new)
        for s in new:
            s.validate()
        keys = [(s.vip, s.port, s.proto) for s in new]
        if len(set(keys)) != len(keys):
            raise AlreadyExists("two services have the same VIP, port and proto")
        if dry_run:
            changes = table.preview(self.dp._cp, self._idx, new)
        else:
            changes = self._commit(new)
        return {"stage": self.stage, "change": what, "committed": not dry_run,
                "moves": changes}

    # -- actions ----------------------------------------------------------------------------
    def add_service(self, service: dict | Service, dry_run: bool = False) -> dict:
        """Add a service (a :class:`Service` or its mapping)."""
        svc = service if isinstance(service, Service) else Service.from_dict(service)
        svc.validate()

        def fn(new: list[Service]) -> str:
            if any(s.name == svc.name for s in new):
                raise AlreadyExists(f"service '{svc.name}' exists")
            new.append(copy.deepcopy(svc))
            return f"add service {svc.name}"
        return self._change(fn, dry_run)

    def remove_service(self, service: str, dry_run: bool = False) -> dict:
        """Remove a service: new flows to its VIP are no longer balanced; its flows finish."""
        def fn(new: list[Service]) -> str:
            new.remove(self._find(new, service))
            return f"remove service {service}"
        return self._change(fn, dry_run)

    def add_backend(self, service: str, backend: str, weight: int = 1,
                    dry_run: bool = False) -> dict:
        """Add backend ``ADDR:PORT`` with ``weight`` to ``service``."""
        addr, port = parse_backend_name(backend)

        def fn(new: list[Service]) -> str:
            s = self._find(new, service)
            if any(b.addr == addr and b.port == port for b in s.backends):
                raise AlreadyExists(f"service '{service}' already has backend {backend}")
            s.backends.append(Backend(addr, port, weight))
            return f"add backend {backend} to {service}"
        return self._change(fn, dry_run)

    def remove_backend(self, service: str, backend: str, dry_run: bool = False) -> dict:
        """Remove a backend: no new flows; the flows it has finish on it."""
        def fn(new: list[Service]) -> str:
            s = self._find(new, service)
            s.backends.remove(s.backend(backend))
            return f"remove backend {backend} from {service}"
        return self._change(fn, dry_run)

    def set_backend(self, service: str, backend: str, weight: int | None = None,
                    state: str | None = None, dry_run: bool = False) -> dict:
        """Change a backend's weight and/or state (up, drain, down)."""
        if weight is None and state is None:
            raise InvalidArgument("nothing to set: give a weight or a state")
        if state is not None and state not in STATES:
            raise ConfigError(f"state: {state!r} is not one of {', '.join(STATES)}",
                              key="state")

        def fn(new: list[Service]) -> str:
            b = self._find(new, service).backend(backend)
            parts = []
            if weight is not None:
                b.weight = weight
                parts.append(f"weight {weight}")
            if state is not None:
                b.state = state
                parts.append(state)
            return f"set {service} {backend}: {', '.join(parts)}"
        return self._change(fn, dry_run)

    def set_weight(self, service: str, backend: str, weight: int,
                   dry_run: bool = False) -> dict:
        """Change a backend's weight (0: no new flows)."""
        return self.set_backend(service, backend, weight=weight, dry_run=dry_run)

    def drain(self, service: str, backend: str, dry_run: bool = False) -> dict:
        """Drain a backend: no new flows; existing ones finish."""
        return self.set_backend(service, backend, state="drain", dry_run=dry_run)

    def mark_down(self, service: str, backend: str, dry_run: bool = False) -> dict:
        """Health: the backend is down and takes no new flows."""
        return self.set_backend(service, backend, state="down", dry_run=dry_run)

    def mark_up(self, service: str, backend: str, dry_run: bool = False) -> dict:
        """Health: the backend is up again."""
        return self.set_backend(service, backend, state="up", dry_run=dry_run)

    def preview(self, services: list[dict | Service]) -> dict:
        """What replacing every service with ``services`` would move (not committed)."""
        new = [s if isinstance(s, Service) else Service.from_dict(s) for s in services]
        return {"stage": self.stage, "moves": table.preview(self.dp._cp, self._idx, new)}

    def backend_id(self, service: str, backend: str) -> int:
        """The id flows of this backend carry (``flows()["lb"] - 1``)."""
        self._find(self.services, service).backend(backend)
        return self.ids[service][self._find(self.services, service).backend(backend).name]

    def show(self, service: str | None = None) -> dict:
        """Services, their backends, live connections and flows assigned so far."""
        out = []
        for s in self.services:
            if service is not None and s.name != service:
                continue
            ids = [self.ids[s.name][b.name] for b in s.backends]
            st = table.backend_stats(self.dp._cp, self._idx, ids)
            d = s.to_dict()
            for bd, i, (conns, assigned) in zip(d["backends"], ids, st):
                bd.setdefault("state", "up")
                bd.update(id=i, conns=conns, assigned=assigned)
            out.append(d)
        if service is not None and not out:
            self._find(self.services, service)
        return {"stage": self.stage, "services": out}

    def register(self, server: Any) -> None:
        """Serve service.add / .set / .drain / .remove / .show / .preview on a ControlServer."""
        def add(service: dict | None = None, name: str | None = None,
                backend: str | None = None, weight: int = 1, dry_run: bool = False) -> dict:
            if service is not None:
                return self.add_service(service, dry_run)
            if name is None or backend is None:
                raise InvalidArgument("service.add needs a service mapping, or name and backend")
            return self.add_backend(name, backend, weight, dry_run)

        def set_(name: str, backend: str, weight: int | None = None,
                 state: str | None = None, dry_run: bool = False) -> dict:
            return self.set_backend(name, backend, weight, state, dry_run)

        def drain(name: str, backend: str, dry_run: bool = False) -> dict:
            return self.drain(name, backend, dry_run)

        def remove(name: str, backend: str | None = None, dry_run: bool = False) -> dict:
            if backend is None:
                return self.remove_service(name, dry_run)
            return self.remove_backend(name, backend, dry_run)

        def show(name: str | None = None) -> dict:
            return self.show(name)

        server.register("service.add", add)
        server.register("service.set", set_)
        server.register("service.drain", drain)
        server.register("service.remove", remove)
        server.register("service.show", show)
        server.register("service.preview", self.preview)
