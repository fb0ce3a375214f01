"""Trace, capture and the live view on a running dataplane, over the control socket.

One function per action; ``pydp run`` registers them (:meth:`ObsService.register`)
and the CLI (``pydp trace``, ``pydp capture``, ``pydp top``) calls them:

- ``trace.start {count, filter}``, ``trace.read``, ``trace.status``, ``trace.stop``;
- ``capture.start {path, port|stage, count, snaplen, filter}``, ``capture.status``,
  ``capture.stop``;
- ``top {flows}``: counters and the top flows by bytes, in one document.
"""

from __future__ import annotations

import os
from typing import Any

from . import trace as tr
from .capture import Capture
from .errors import InvalidArgument, NotFound
from .metrics import Metric, register_provider


def rule_namer(dp: Any) -> Any:
    """A function (policy stage, rule id) -> rule name, from the live policies."""
    def name(stage: str, rid: int) -> str:
        svc = dp.services.get("policy")
        pol = svc.current.get(stage) if svc is not None else None
        if pol is None:
            return "(default)" if rid == tr.DEFAULT_RULE else ""
        if rid == tr.DEFAULT_RULE or rid >= len(pol.rules):
            return "(default allow)" if pol.default == "allow" else "(default deny)"
        return pol.rules[rid].name
    return name


class ObsService:
    """The observability commands of one :class:`pydp.Dataplane`."""

    def __init__(self, dp: Any) -> None:
        """Serve ``dp``; at most one capture runs at a time."""
        self.dp = dp
        self.capture: Capture | None = None
        self.tracing = False
        self.captured = {"written": 0, "dropped": 0}  # finished captures, summed

    # -- trace ---------------------------------------------------------------------------
    def trace_start(self, count: int = 10, filter: str | None = None) -> dict:  # noqa: A002
        """Arm a trace of the next ``count`` packets matching ``filter``.

        Refused while another trace still waits for packets: two ``pydp trace``
        sessions would share one set of records and disarm each other.
        """
        if self.tracing and tr.remaining(self.dp) > 0:
            raise InvalidArgument("a trace is running (its packets are still awaited); "
                                  "stop it first (trace.stop)")
        tr.start(self.dp, int(count), filter or None)
        self.tracing = True
        return {"count": int(count), "filter": filter or ""}

    def trace_read(self) -> dict:
        """Records finished since the last read, and how many are still awaited."""
        if not self.tracing:
            raise NotFound("no trace running (trace.start)")
        recs = tr.read(self.dp, rule_namer(self.dp))
        return {"records": [r.to_dict() for r in recs], "remaining": tr.remaining(self.dp)}

    def trace_status(self) -> dict:
        """How many packets the trace still waits for."""
        return {"tracing": self.tracing,
                "remaining": tr.remaining(self.dp) if self.tracing else 0}

    def trace_stop(self) -> dict:
        """Disarm the trace."""
        tr.stop(self.dp)
        self.tracing = False
        return {"stopped": True}

    # -- capture -------------------------------------------------------------------------
    def capture_start(self, path: str, port: str | None = None, stage: str | None = None,
                      count: int = 0, snaplen: int = 0, filter: str | None = None) -> dict:  # noqa: A002
        """Start a pcapng capture of a port or of a stage's input into ``path``."""
        if self.capture is not None and not self.capture._stopped:
            raise InvalidArgument(f"a capture to {self.capture.path} is running "
                                  "(capture.stop first)")
        if not os.path.isabs(path):
            raise InvalidArgument(f"capture: path {path!r} must be absolute (the dataplane "
                                  "writes it)")
        self.capture = Capture(self.dp, path, port=port, stage=stage, count=int(count),
                               snaplen=int(snaplen), filter=filter or None)
        return {"path": path, **self.capture.info.to_dict()}

    def _cap(self) -> Capture:
        if self.capture is None:
            raise NotFound("no capture (capture.start)")
        return self.capture

    def capture_status(self) -> dict:
        """Packets written, dropped, remaining; whether workers still copy."""
        cap = self._cap()
        info = cap.info if cap._stopped else cap.poll()
        return {"path": cap.path, "done": cap.done, **info.to_dict()}

    def capture_stop(self) -> dict:
        """Stop, finish and close the file."""
        cap = self._cap()
        info = cap.stop()
        self.capture = None
        self.captured["written"] += info.written
        self.captured["dropped"] += info.dropped
        return {"path": cap.path, **info.to_dict()}

    # -- top -----------------------------------------------------------------------------
    def top(self, flows: int = 10) -> dict:
        """Counters and the ``flows`` biggest flows (by bytes) of each conntrack stage."""
        from . import flows as fl
        doc = self.dp.stats().to_dict()
        doc["pipeline"] = self.dp.pipeline.name
        top: list[dict] = []
        for st in self.dp.pipeline.stages:
            if st.TYPE != "conntrack":
                continue
            recs = fl.flows(self.dp, st.name)
            if len(recs):
                tot = recs["bytes_orig"] + recs["bytes_reply"]
                recs = recs[tot.argsort()[::-1][:int(flows)]]
            for r in fl.records(recs):
                top.append({"stage": st.name, **r})
        top.sort(key=lambda r: -(r["bytes_orig"] + r["bytes_reply"]))
        doc["top_flows"] = top[:int(flows)]
        from .table_stats import sections
        doc.update(sections(self.dp))  # services/backends and SAs, when present
        return doc

    def register(self, server: Any) -> None:
        """Serve trace.*, capture.* and top on a ControlServer."""
        self.dp.services["obs"] = self
        server.register("trace.start", self.trace_start)
        server.register("trace.read", self.trace_read)
        server.register("trace.status", self.trace_status)
        server.register("trace.stop", self.trace_stop)
        server.register("capture.start", self.capture_start)
        server.register("capture.status", self.capture_status)
        server.register("capture.stop", self.capture_stop)
        server.register("top", self.top)


def obs_metrics(dp: Any) -> Any:
    """Capture totals (packets written, copies lost) and whether a trace waits."""
    svc = dp.services.get("obs")
    if svc is None:
        return
    tot = dict(svc.captured)
    if svc.capture is not None and not svc.capture._stopped:
        tot["written"] += svc.capture.info.written
        tot["dropped"] += svc.capture.info.dropped
    yield Metric("pydp_capture_packets_total", "Packets written by pydp capture.", {},
                 tot["written"])
    yield Metric("pydp_capture_dropped_total", "Capture copies lost (ring full, pool empty); "
                 "the packets themselves were not.", {}, tot["dropped"])
    yield Metric("pydp_trace_remaining", "Packets the armed trace still waits for.", {},
                 tr.remaining(dp) if svc.tracing else 0, "gauge")


register_provider("obs", obs_metrics)
