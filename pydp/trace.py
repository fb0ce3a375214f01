"""Packet trace, as VPP's: the stages each packet went through, its verdict, its table hits.

The C core arms a per-pipeline flag; the next ``count`` packets that match a
pcap-filter expression (as tcpdump takes it: ``"udp and dst port 53"``) are
recorded by the workers (``csrc/pd_trace.c``). Off, tracing costs one branch
per rx burst::

    recs = dp.trace(5, "udp")            # waits for 5 packets (or the timeout)
    for r in recs:
        print(r.format())
        r.packet.show()                  # the first 128 bytes, as scapy

Over the control socket (``pydp trace``) the same records travel as dicts
(:meth:`TraceRecord.to_dict` / :meth:`TraceRecord.from_dict`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ._core import check, cstr, ffi, lib
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .runtime import Dataplane

EVENT_KINDS = {lib.PD_TRACE_EV_STAGE: "stage", lib.PD_TRACE_EV_EMIT: "emit",
               lib.PD_TRACE_EV_TX: "tx", lib.PD_TRACE_EV_DROP: "drop",
               lib.PD_TRACE_EV_HIT: "hit", lib.PD_TRACE_EV_COPY: "copy",
               lib.PD_TRACE_EV_HELD: "held"}
#: table kinds of a "hit" event (pd_trace_hit in csrc/pd_internal.h)
HIT_KINDS = {lib.PD_TRACE_RULE: "rule", lib.PD_TRACE_FLOW: "flow",
             lib.PD_TRACE_FLOW_NEW: "flow-new", lib.PD_TRACE_BACKEND: "backend",
             lib.PD_TRACE_SERVICE: "service", lib.PD_TRACE_SA: "sa",
             lib.PD_TRACE_ROUTE: "route"}
DEFAULT_RULE = 0xFFFFFFFF
MAX_COUNT = lib.PD_TRACE_MAX


@dataclass
class TraceEvent:
    """One step of a traced packet: in which stage, what happened."""

    kind: str                   # stage, emit, tx, drop, hit, copy, held
    stage: str
    edge: str = ""              # emit: the edge taken
    to: str = ""                # emit/copy: next stage; tx/copy: port
    reason: str = ""            # drop: the named reason
    table: str = ""             # hit: rule, flow, flow-new, backend, service, sa, route
    id: int = -1                # hit: rule id / flow index / backend id / service id / SPI
    name: str = ""              # hit: rule name, service name, "service addr:port" of a
                                # backend, "spi 0x..." of an SA, when known
    ns: int = 0                 # ns since the packet was received

    def describe(self) -> str:
        """One line, as the trace prints it."""
        if self.kind == "stage":
            return f"{self.stage}"
        if self.kind == "emit":
            return f"  -> {self.to} (edge {self.edge})"
        if self.kind == "tx":
            return f"  -> tx on port {self.to}"
        if self.kind == "drop":
            return f"  -> drop: {self.reason}"
        if self.kind == "copy":
            return f"  -> copy to {self.to}"
        if self.kind == "held":
            return "  -> held by the stage (no verdict in this burst)"
        default = self.table == "rule" and self.id == DEFAULT_RULE
        if self.table == "sa" and self.name:
            return f"  hit sa {self.name}"
        if self.name:
            return f"  hit {self.table} {self.name}" + ("" if default else f" (id {self.id})")
        return f"  hit {self.table} {'(default)' if default else self.id}"


@dataclass
class TraceRecord:
    """One traced packet."""

    seq: int
    worker: int
    in_port: str
    queue: int
    length: int
    data: bytes                 # the first bytes at rx (up to 128)
    events: list[TraceEvent] = field(default_factory=list)
    lost_events: int = 0

    @property
    def packet(self) -> Any:
        """The packet as received (its first bytes), as a scapy ``Ether``."""
        import scapy.layers.inet
        import scapy.layers.inet6  # noqa: F401 - binds IPv4/IPv6 and L4 under Ether
        from scapy.layers.l2 import Ether
        return Ether(self.data)

    @property
    def stages(self) -> list[str]:
        """The stages it went through, in order."""
        return [e.stage for e in self.events if e.kind == "stage"]

    @property
    def verdict(self) -> str:
        """'tx PORT', 'drop STAGE/REASON', or 'held STAGE' (its last verdict)."""
        for e in reversed(self.events):
            if e.kind == "tx":
                return f"tx {e.to}"
            if e.kind == "drop":
                return f"drop {e.stage}/{e.reason}"
            if e.kind == "held":
                return f"held {e.stage}"
        return "unknown"

    @property
    def hits(self) -> list[TraceEvent]:
        """Its table hits (rule, flow, backend, SA...), in order."""
        return [e for e in self.events if e.kind == "hit"]

    def format(self) -> str:
        """VPP-style text: a header, the packet summary, one line per event."""
        lines = [f"Packet {self.seq} (worker {self.worker}, port {self.in_port} queue "
                 f"{self.queue}, {self.length} bytes)",
                 f"  {self.packet.summary()}"]
        for e in self.events:
            lines.append(f"  {e.ns:>8} ns  {e.describe()}")
        if self.lost_events:
            lines.append(f"  ({self.lost_events} more events not recorded)")
        lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the packet bytes as hex, and its scapy summary)."""
        d = asdict(self)
        d["data"] = self.data.hex()
        d["summary"] = self.packet.summary()
        d["stages"] = self.stages
        d["verdict"] = self.verdict
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceRecord:
        """Rebuild a record from :meth:`to_dict` output."""
        return cls(seq=d["seq"], worker=d["worker"], in_port=d["in_port"], queue=d["queue"],
                   length=d["length"], data=bytes.fromhex(d["data"]),
                   events=[TraceEvent(**e) for e in d["events"]],
                   lost_events=d.get("lost_events", 0))


def _names(dp: Dataplane) -> tuple[dict[int, Any], dict[int, str]]:
    stages = {i: dp.pipeline.stage(n) for n, i in dp.stage_index.items()}
    ports = {i: n for n, i in dp.port_index.items()}
    return stages, ports


def _lb_names(dp: Dataplane) -> dict[str, tuple[dict[int, str], dict[int, str]]]:
    from .table_stats import lb_names, lb_stages
    try:
        return {st: lb_names(dp, st) for st in lb_stages(dp)}
    except Exception:  # noqa: BLE001 - names are a courtesy: ids still print
        return {}


def hit_name(table: str, id_: int, stage: str,
             lb: dict[str, tuple[dict[int, str], dict[int, str]]]) -> str:
    """The name of a service, backend or SA hit (rules: see ``rule_name``); "" unknown.

    Service: its name; backend: ``"service addr:port"`` (the lb stage notes the
    pool id it keeps per flow); SA: ``"spi 0x..."`` (ESP stages note the SPI, the
    SA's identity in ``sa_list``/``sa_remove``).
    """
    if table == "sa":
        return f"spi 0x{id_:x}"
    if table in ("service", "backend") and stage in lb:
        return lb[stage][0 if table == "service" else 1].get(id_, "")
    return ""


def _decode(dp: Dataplane, r: Any, rule_name: Callable[[str, int], str] | None,
            lb: dict[str, tuple[dict[int, str], dict[int, str]]] | None = None) -> TraceRecord:
    stages, ports = _names(dp)
    hz = lib.pd_tsc_hz() or 1
    evs = []
    for k in range(r.n_events):
        e = r.ev[k]
        st = stages.get(e.stage)
        sname = st.name if st is not None else str(e.stage)
        kind = EVENT_KINDS.get(e.kind, str(e.kind))
        ev = TraceEvent(kind, sname, ns=int((e.tsc - r.tsc) * 1e9 / hz) if e.tsc > r.tsc else 0)
        if kind == "emit":
            nxt = stages.get(e.value)
            ev.to = nxt.name if nxt is not None else str(e.value)
            ev.edge = cstr(lib.pd_stage_type_edge(st.TYPE.encode(), e.arg)) if st else ""
        elif kind == "tx":
            ev.to = ports.get(e.arg, str(e.arg))
        elif kind == "copy":
            if e.value:
                nxt = stages.get(e.value - 1)
                ev.to = nxt.name if nxt is not None else str(e.value - 1)
            else:
                ev.to = f"port {ports.get(e.arg, str(e.arg))}"
        elif kind == "drop":
            ev.reason = cstr(lib.pd_stage_type_drop(st.TYPE.encode(), e.arg)) if st else str(e.arg)
        elif kind == "hit":
            ev.table = HIT_KINDS.get(e.arg, str(e.arg))
            ev.id = int(e.value)
            if ev.table == "rule" and rule_name is not None:
                ev.name = rule_name(sname, ev.id)
            elif ev.table in ("service", "backend", "sa"):
                ev.name = hit_name(ev.table, ev.id, sname, lb or {})
        evs.append(ev)
    return TraceRecord(seq=int(r.seq), worker=int(r.worker),
                       in_port=ports.get(r.in_port, str(r.in_port)), queue=int(r.queue),
                       length=int(r.pkt_len), data=bytes(ffi.buffer(r.data, r.snap_len)),
                       events=evs, lost_events=int(r.lost_events))


def check_filter(expr: str | None) -> None:
    """Raise :class:`InvalidArgument` naming the problem if ``expr`` does not compile."""
    if expr:
        check(lib.pd_filter_check(expr.encode()))


def start(dp: Dataplane, count: int, filter: str | None = None) -> None:  # noqa: A002
    """Arm a trace of the next ``count`` packets matching ``filter`` (pcap-filter syntax)."""
    if not 1 <= count <= MAX_COUNT:
        raise InvalidArgument(f"count: {count} (1..{MAX_COUNT} allowed)")
    check(lib.pd_trace_start(dp._cp, count, filter.encode() if filter else ffi.NULL))


_READ_BATCH = 64


def read(dp: Dataplane, rule_name: Callable[[str, int], str] | None = None
         ) -> list[TraceRecord]:
    """The records finished since the last read, in match order."""
    buf = ffi.new("struct pd_trace_rec[]", _READ_BATCH)
    out: list[TraceRecord] = []
    lb: dict[str, tuple[dict[int, str], dict[int, str]]] | None = None
    while True:
        n = check(lib.pd_trace_read(dp._cp, buf, _READ_BATCH))
        if n and lb is None:
            lb = _lb_names(dp)
        out.extend(_decode(dp, buf[i], rule_name, lb) for i in range(n))
        if n < _READ_BATCH:
            return sorted(out, key=lambda r: r.seq)


def remaining(dp: Dataplane) -> int:
    """Packets the running trace still waits for (0: complete, or none armed)."""
    return check(lib.pd_trace_remaining(dp._cp))


def stop(dp: Dataplane) -> None:
    """Disarm the trace and free its records."""
    check(lib.pd_trace_stop(dp._cp))


def trace(dp: Dataplane, count: int, filter: str | None = None,  # noqa: A002
          timeout: float = 10.0,
          rule_name: Callable[[str, int], str] | None = None) -> list[TraceRecord]:
    """Trace the next ``count`` matching packets; return them (fewer after ``timeout`` s)."""
    start(dp, count, filter)
    out: list[TraceRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            out.extend(read(dp, rule_name))
            if len(out) >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        out.extend(read(dp, rule_name))
    finally:
        stop(dp)
    return sorted(out, key=lambda r: r.seq)
