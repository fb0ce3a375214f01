"""Run a pipeline on ports: the :class:`Dataplane`.

The main lcore stays with Python (control plane); worker lcores run the C
fast path to completion. Python never runs per packet: it configures, reads
counters, and injects or captures test traffic::

    with Dataplane(Pipeline.load("pipelines/forward.yaml"),
                   ports={"in": "net_ring0", "out": "net_ring1"}) as dp:
        dp.start()
        dp.port("in").inject(packets)
        out = dp.port("out").capture(count=len(packets))
        dp.stop()
        print(dp.stats().summary())
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import eal
from ._core import check, cstr, ffi, lib
from .errors import InvalidArgument
from .mempool import Pool, pool_size_for
from .pipeline import Pipeline
from .ports import Port
from .source import Source
from .stages import L3Route, NextHop, Route
from .stats import Stats


class Dataplane:
    """A pipeline bound to ports and worker lcores."""

    def __init__(self, pipeline: Pipeline, ports: Mapping[str, str | Port],
                 workers: int | Sequence[int] = 1, rxq: int | None = None,
                 rx_desc: int = 1024, tx_desc: int = 1024, pool_mbufs: int | None = None,
                 sources: Mapping[str, Source] | None = None) -> None:
        """Open the ports (devargs or :class:`Port`), size the pool, build the C pipeline.

        ``workers``: a count (the first N worker lcores) or explicit lcore ids.
        ``rxq``: rx queues per polled port (default: one per worker, capped by
        the device). ``sources``: port name -> :class:`Source` generating
        that port's "received" traffic instead of polling it.
        """
        info = eal.init()
        self.pipeline = pipeline
        missing = [p for p in pipeline.ports if p not in ports]
        if missing:
            raise InvalidArgument(f"port '{missing[0]}' of pipeline '{pipeline.name}' has no "
                                  "device: give --port NAME=DEVARGS")
        extra = [p for p in ports if p not in pipeline.ports]
        if extra:
            raise InvalidArgument(f"port '{extra[0]}' is not a port of pipeline "
                                  f"'{pipeline.name}' (ports: {', '.join(pipeline.ports)})")
        if isinstance(workers, int):
            if workers < 1 or workers > len(info.workers):
                raise InvalidArgument(f"workers: {workers} requested, the EAL has "
                                      f"{len(info.workers)} worker lcores {info.workers}")
            self.lcores = list(info.workers[:workers])
        else:
            self.lcores = [int(x) for x in workers]
            bad = [x for x in self.lcores if x not in info.workers]
            if bad or not self.lcores:
                raise InvalidArgument(f"lcores: {bad or self.lcores} not worker lcores of this "
                                      f"EAL {info.workers}")
        self.sources = dict(sources or {})
        for p in self.sources:
            if p not in pipeline.ports:
                raise InvalidArgument(f"sources: no port named '{p}'")
        nw = len(self.lcores)
        self._ports: dict[str, Port] = {}
        self._owned: list[Port] = []
        self._pool: Pool | None = None
        self._cp: Any = None
        self._closed = False
        self._t_start = 0.0
        self._t_run = 0.0
        try:
            for name in pipeline.ports:
                dev = ports[name]
                if isinstance(dev, Port):
                    self._ports[name] = dev
                else:
                    port = Port(dev, name=name)
                    self._owned.append(port)
                    self._ports[name] = port
            polled = set(pipeline.input_map())
            plan = []
            for name in pipeline.ports:
                pi = self._ports[name].info()
                want = (rxq or nw) if name in polled and name not in self.sources else 1
                nrx = max(1, min(want, pi.max_rxq))
                if nw > pi.max_txq:
                    raise InvalidArgument(
                        f"port '{name}' ({pi.driver}) has {pi.max_txq} tx queue(s) but the "
                        f"pipeline runs {nw} workers, each needing its own"
                        + (" (use net_ringN,queues=K)" if pi.is_ring else ""))
                plan.append((name, nrx, nw))
            ring_slots = 16384 * 2 * sum(1 for p in self._ports.values() if p.info().is_ring)
            n = pool_mbufs or pool_size_for([(r, t, rx_desc, tx_desc) for _, r, t in plan], nw,
                                            len(pipeline.stages), min(ring_slots, 65536))
            self._pool = Pool(n)
            for name, nrx, ntx in plan:
                self._ports[name].configure(self._pool, nrx, ntx, rx_desc, tx_desc)
            self._build()
            for port in self._ports.values():
                port.start()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        out = ffi.new("struct pd_pipeline **")
        check(lib.pd_pipeline_new(self.pipeline.name.encode(), out))
        self._cp = out[0]
        self.port_index: dict[str, int] = {}
        for name in self.pipeline.ports:
            self.port_index[name] = check(lib.pd_pipeline_add_port(
                self._cp, name.encode(), self._ports[name].port_id))
        order = self.pipeline.order()
        self.stage_index = {}
        for st in order:
            self.stage_index[st.name] = check(lib.pd_pipeline_add_stage(
                self._cp, st.TYPE.encode(), st.name.encode()))
        for st in order:
            edges = st.edge_names()
            for edge, target in st.edges().items():
                check(lib.pd_pipeline_link(self._cp, self.stage_index[st.name],
                                           edges.index(edge), self.stage_index[target]))
            st.configure(self._cp, self.stage_index[st.name], self.port_index)
        inputs = self.pipeline.input_map()
        for name in self.pipeline.ports:
            target = self.stage_index[inputs[name]] if name in inputs else -1
            check(lib.pd_pipeline_set_input(self._cp, self.port_index[name], target))
        for name, src in self.sources.items():
            src.attach(self._cp, self.port_index[name])
        lc = ffi.new("unsigned[]", self.lcores)
        check(lib.pd_pipeline_build(self._cp, self._pool._ptr, lc, len(self.lcores)))
        self._map_counters()

    def _map_counters(self) -> None:
        """Name the built pipeline's counters and view them without copying."""
        rows = ffi.new("unsigned *")
        stride = ffi.new("unsigned *")
        ptr = lib.pd_pipeline_counters(self._cp, rows, stride)
        n = lib.pd_pipeline_n_counters(self._cp)
        self.counter_names = [cstr(lib.pd_pipeline_counter_name(self._cp, i)) for i in range(n)]
        buf = ffi.buffer(ptr, rows[0] * stride[0] * 8)
        # a zero-copy view of the per-worker counter rows
        self._ctr = np.frombuffer(buf, dtype=np.uint64).reshape(rows[0], stride[0])[:, :n]

    # -- control ------------------------------------------------------------------------
    def port(self, name: str) -> Port:
        """The :class:`Port` bound to pipeline port ``name``."""
        try:
            return self._ports[name]
        except KeyError:
            raise InvalidArgument(f"no port named '{name}' (ports: "
                                  f"{', '.join(self._ports)})") from None

    @property
    def pool(self) -> Pool:
        """The mbuf pool every port and the source draw from."""
        assert self._pool is not None
        return self._pool

    def start(self) -> None:
        """Launch the workers."""
        check(lib.pd_pipeline_start(self._cp))
        self._t_start = time.monotonic()

    def stop(self) -> None:
        """Stop the workers; they flush tx and drop buffers before returning."""
        if self._cp is not None and lib.pd_pipeline_running(self._cp):
            check(lib.pd_pipeline_stop(self._cp))
            self._t_run += time.monotonic() - self._t_start

    @property
    def running(self) -> bool:
        """True while workers run."""
        return bool(self._cp is not None and lib.pd_pipeline_running(self._cp))

    def sources_done(self) -> bool:
        """True when every source with a count has sent it all."""
        return bool(lib.pd_pipeline_source_done(self._cp))

    def close(self) -> None:
        """Stop, free the pipeline, remove the ports this object opened, free the pool."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._cp is not None:
            self._ctr = None
            lib.pd_pipeline_free(self._cp)
            self._cp = None
            if getattr(self, "_esp_sas", None):
                from . import esp
                esp.wipe_all(self)  # C wiped every SA with the pipeline
        for p in self._ports.values():
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - best effort during teardown
                pass
        for p in self._owned:
            p.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tables at run time -------------------------------------------------------------
    def set_routes(self, stage: str, routes: Sequence[Route | dict],
                   nexthops: Sequence[NextHop | dict] | None = None) -> None:
        """Replace an l3route stage's routes (and next hops), published with RCU."""
        st = self.pipeline.stage(stage)
        if not isinstance(st, L3Route):
            raise InvalidArgument(f"stage '{stage}' is a {st.TYPE}, not an l3route")
        new = L3Route(st.name, nexthops=list(nexthops if nexthops is not None else st.nexthops),
                      routes=list(routes))
        new.validate(self.pipeline)
        new.configure(self._cp, self.stage_index[stage], self.port_index)
        st.nexthops, st.routes = new.nexthops, new.routes

    # -- ESP security associations (pydp.esp) --------------------------------------------
    def sa_add(self, stage: str, sa: Any) -> None:
        """Add an :class:`pydp.esp.SA` to ESP stage ``stage`` (see :func:`pydp.esp.sa_add`)."""
        from . import esp
        esp.sa_add(self, stage, sa)

    def sa_remove(self, stage: str, spi: int) -> None:
        """Remove and wipe an SA (see :func:`pydp.esp.sa_remove`)."""
        from . import esp
        esp.sa_remove(self, stage, spi)

    def sa_list(self, stage: str) -> list[dict[str, Any]]:
        """The SAs of ESP stage ``stage`` with counters, never keys (:func:`pydp.esp.sa_list`)."""
        from . import esp
        return esp.sa_list(self, stage)

    def sa_events(self, stage: str) -> list[dict[str, Any]]:
        """New lifetime/rekey events of ``stage``'s SAs (:func:`pydp.esp.sa_events`)."""
        from . import esp
        return esp.sa_events(self, stage)

    # -- observing ------------------------------------------------------------------------
    def set_stage_cycles(self, on: bool) -> bool:
        """Count TSC cycles per stage (``stage/<s>/cycles``) from the next burst on.

        Off by default: off costs one predictable branch per burst, on two
        rte_rdtsc() per stage per burst. Callable while running. Returns the
        previous setting.
        """
        if self._cp is None:
            raise InvalidArgument("the dataplane is closed")
        return bool(check(lib.pd_pipeline_set_stage_cycles(self._cp, 1 if on else 0)))

    def counters(self) -> np.ndarray:
        """The raw per-worker counter rows (a live numpy view, not a copy)."""
        return self._ctr

    def stats(self) -> Stats:
        """A summed snapshot of every counter plus the ports' device stats."""
        totals = self._ctr.sum(axis=0, dtype=np.uint64)
        hw = {name: p.hwstats() for name, p in self._ports.items()}
        elapsed = self._t_run + (time.monotonic() - self._t_start if self.running else 0.0)
        return Stats(dict(zip(self.counter_names, (int(x) for x in totals))), hw, elapsed,
                     eal.info().memory if eal.info() else "")

    def wait_idle(self, idle: float = 0.5, timeout: float = 60.0, poll: float = 0.05) -> bool:
        """Wait until no port has received anything for ``idle`` s (True), or timeout."""
        rx_idx = [i for i, n in enumerate(self.counter_names) if n.endswith("/rx_packets")]
        last = int(self._ctr[:, rx_idx].sum())
        t_last = time.monotonic()
        deadline = t_last + timeout
        while time.monotonic() < deadline:
            time.sleep(poll)
            now = int(self._ctr[:, rx_idx].sum())
            if now != last:
                last, t_last = now, time.monotonic()
            elif time.monotonic() - t_last >= idle:
                return True
        return False

    def wait_rx(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until the ports together have received ``count`` packets."""
        rx_idx = [i for i, n in enumerate(self.counter_names) if n.endswith("/rx_packets")]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self._ctr[:, rx_idx].sum()) >= count:
                return True
            time.sleep(0.005)
        return False
