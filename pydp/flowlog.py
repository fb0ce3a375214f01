"""Flow log: JSON lines of flow start and end, and the control thread's flow ageing.

``pydp run ... --flow-log FILE`` writes one JSON object per line::

    {"event": "start", "time": 1764620000.12, "stage": "flows", "flow": 17,
     "proto": "tcp", "src": "198.51.100.7", "sport": 40000, "dst": "10.0.1.5",
     "dport": 443, "verdict": "allow", "rule": "internet-to-web",
     "src_identity": null, "dst_identity": {"name": "web", "labels": {...}}, ...}
    {"event": "end", ..., "reason": "idle", "duration_ms": 30012,
     "packets": {"orig": 12, "reply": 10}, "bytes": {"orig": 1400, "reply": 9000}}

Denied packets never make a flow; while a log is written, each policy stage
puts their 5-tuples on a ring (its deny path only; ``pd_policy_deny_log``)
and each tick writes one ``deny`` line per denied 5-tuple and rule, with the
packets and bytes seen in that tick and the deny reason
(``policy-deny``, ``default-deny``); a full ring is reported as a
``deny-lost`` line with the count.

It runs on the control thread, never in a worker: ends come from the expiry
scan itself (``pd_conntrack_expire_log`` hands over each flow as it was
deleted, with its final counters), starts from a scan of the table
(``pd_conntrack_dump``) each tick; a flow that began and ended between two
ticks gets its start line with its end. The ``verdict`` is what let the flow
exist: the policy rule that allowed it (the flow's tag), ``allow`` by default,
or ``tracked`` for a conntrack stage without a policy. Identities come from
the policy model (address -> identity name and labels) of the policy stage
that confirms the flows, when one is loaded.

:class:`FlowLog` is also the one background ager of the flow tables:
``pydp run`` ticks one for every conntrack stage, with or without a log
file (``FlowLog(dp, None)``: :func:`pydp.flows.expire` every ``interval``;
with a file the same expiry scan hands over each deleted flow for its end
line). Ageing expires idle flows, recycles evicted slots and, through the lb
stage's release hook, lowers the backends' live connection counts.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from . import flows as fl
from ._core import check, cstr, ffi, lib

if TYPE_CHECKING:
    from .runtime import Dataplane

PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
TAG_DEFAULT = 0xFFFFFFFF
_BATCH = 4096


def _policy_of(dp: Dataplane, stage: Any) -> Any:
    """The live policy model of policy stage ``stage`` (None if none is loaded).

    It is the control socket's (``dp.services["policy"]``), so a ``pydp policy
    apply`` shows in the log at once; made here (the stage's file) if absent.
    """
    svc = dp.services.get("policy")
    if svc is None:
        from .policy.service import PolicyService
        svc = dp.services.setdefault("policy", PolicyService(dp))
    return svc.current.get(stage.name)


def _policy_for(dp: Dataplane, ct_stage: str) -> tuple[str | None, Any]:
    """The policy stage confirming ``ct_stage``'s flows and its live policy (or None)."""
    for st in dp.pipeline.stages:
        if st.TYPE == "policy" and getattr(st, "conntrack", None) == ct_stage:
            return st.name, _policy_of(dp, st)
    return None, None


def _deny_dtype() -> np.dtype:
    fields = [("family", "u1"), ("proto", "u1"), ("reason", "u2"), ("sport", "u2"),
              ("dport", "u2"), ("rule", "u4"), ("len", "u4"), ("src", "u1", (16,)),
              ("dst", "u1", (16,)), ("tsc", "u8")]
    return np.dtype({
        "names": [f[0] for f in fields],
        "formats": [np.dtype((f[1], f[2])) if len(f) == 3 else np.dtype(f[1]) for f in fields],
        "offsets": [ffi.offsetof("struct pd_deny_rec", f[0]) for f in fields],
        "itemsize": ffi.sizeof("struct pd_deny_rec")})


#: numpy twin of ``struct pd_deny_rec``
DENY_DTYPE = _deny_dtype()


def _addr(family: int, raw: np.ndarray) -> str:
    b = raw.tobytes()
    return str(ipaddress.IPv4Address(b[:4]) if family == 4 else ipaddress.IPv6Address(b))


class _Identities:
    """Address -> (identity name, labels), longest prefix first."""

    def __init__(self, policy: Any) -> None:
        self.nets: list[tuple[Any, dict[str, Any]]] = []
        for ident in (policy.identities if policy is not None else []):
            for net in ident.addresses:
                self.nets.append((net, {"name": ident.name, "labels": dict(ident.labels)}))
        self.nets.sort(key=lambda x: -x[0].prefixlen)

    def of(self, addr: str) -> dict[str, Any] | None:
        a = ipaddress.ip_address(addr)
        for net, ident in self.nets:
            if a.version == net.version and a in net:
                return ident
        return None


def _flow_hash(recs: np.ndarray) -> np.ndarray:
    """A non-zero 64-bit hash of each flow record's 5-tuple (vectorised)."""
    src = np.ascontiguousarray(recs["src"]).view(np.uint64).reshape(-1, 2)
    dst = np.ascontiguousarray(recs["dst"]).view(np.uint64).reshape(-1, 2)
    m = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        h = src[:, 0] * m ^ src[:, 1]
        h = (h * m) ^ dst[:, 0]
        h = (h * m) ^ dst[:, 1]
        h = (h * m) ^ (recs["sport"].astype(np.uint64) << np.uint64(24)
                       | recs["dport"].astype(np.uint64) << np.uint64(8)
                       | recs["proto"].astype(np.uint64))
        h = h * m
    return h | np.uint64(1)


class FlowLog:
    """Ages every conntrack stage of a dataplane and writes its flow log (optional)."""

    def __init__(self, dp: Dataplane, path: str | None = None, interval: float = 1.0) -> None:
        """``path``: the JSON-lines file (None: age only). ``interval``: seconds per tick."""
        if interval <= 0:
            from .errors import InvalidArgument
            raise InvalidArgument(f"interval must be positive, not {interval}")
        self.dp = dp
        self.path = path
        self.interval = interval
        self.stages = [s.name for s in dp.pipeline.stages if s.TYPE == "conntrack"]
        self._out: TextIO | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._seen: dict[str, dict[tuple, dict[str, Any]]] = {s: {} for s in self.stages}
        # per stage, per flow index: a hash of the flow logged as started there
        self._known: dict[str, np.ndarray] = {s: np.zeros(0, np.uint64) for s in self.stages}
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.counts = {"start": 0, "end": 0, "expired": 0, "deny": 0, "deny-lost": 0}
        # denied packets: the policy stages fill a ring while a log is written
        self.policy_stages = [s.name for s in dp.pipeline.stages if s.TYPE == "policy"]
        self._deny_buf = np.zeros(1024, dtype=DENY_DTYPE)
        if path:
            for st in self.policy_stages:
                check(lib.pd_policy_deny_log(dp._cp, dp.stage_index[st], 1))
        self._buf = np.zeros(_BATCH, dtype=fl.FLOW_DTYPE)
        self._closed = False
        # closing the dataplane closes the log first, while the tables still exist
        dp.services.setdefault("on_close", []).append(self.close)

    # -- one tick ----------------------------------------------------------------------
    def _context(self, stage: str) -> tuple[Any, _Identities]:
        _, pol = _policy_for(self.dp, stage)
        return pol, _Identities(pol)

    def _doc(self, stage: str, r: dict[str, Any], pol: Any, ids: _Identities) -> dict[str, Any]:
        tag = r["tag"]
        if pol is None and not any(s.TYPE == "policy" for s in self.dp.pipeline.stages):
            verdict, rule = "tracked", None
        elif tag == TAG_DEFAULT or pol is None or tag >= len(pol.rules):
            verdict, rule = "allow", "(default allow)" if pol is not None else None
        else:
            verdict, rule = "allow", pol.rules[tag].name
        return {"stage": stage, "flow": r["index"], "proto": PROTOS.get(r["proto"], r["proto"]),
                "src": r["src"], "sport": r["sport"], "dst": r["dst"], "dport": r["dport"],
                "verdict": verdict, "rule": rule,
                "src_identity": ids.of(r["src"]), "dst_identity": ids.of(r["dst"])}

    @staticmethod
    def _key(r: dict[str, Any]) -> tuple:
        return (r["index"], r["proto"], r["src"], r["sport"], r["dst"], r["dport"])

    def _emit(self, doc: dict[str, Any]) -> None:
        self.counts[doc["event"]] += 1
        if self._out is not None:
            self._out.write(json.dumps(doc) + "\n")

    def _end_doc(self, stage: str, r: dict[str, Any], pol: Any, ids: _Identities,
                 reason: str, now: float) -> None:
        key = self._key(r)
        start = self._seen[stage].pop(key, None)
        known = self._known[stage]
        if r["index"] < len(known):
            known[r["index"]] = 0  # the slot's next flow is a new start
        if start is None:  # began and ended between two ticks
            start = {"event": "start", "time": round(now - r["age_ms"] / 1000, 3),
                     **self._doc(stage, r, pol, ids)}
            self._emit(start)
        self._emit({**start, "event": "end", "time": round(now, 3), "reason": reason,
                    "state": r["state"], "duration_ms": r["age_ms"],
                    "packets": {"orig": r["packets_orig"], "reply": r["packets_reply"]},
                    "bytes": {"orig": r["bytes_orig"], "reply": r["bytes_reply"]}})

    def _starts(self, stage: str, recs: np.ndarray, pol: Any, ids: _Identities,
                now: float) -> None:
        """Start lines for the flows not seen before; only those become Python dicts."""
        if not len(recs):
            return
        h = _flow_hash(recs)
        idx = recs["index"].astype(np.int64)
        known = self._known[stage]
        if int(idx.max()) >= len(known):
            grown = np.zeros(int(idx.max()) + 1024, np.uint64)
            grown[:len(known)] = known
            known = self._known[stage] = grown
        new = known[idx] != h
        if not new.any():
            return
        known[idx[new]] = h[new]
        for r in fl.records(recs[new]):
            doc = {"event": "start", "time": round(now - r["age_ms"] / 1000, 3),
                   **self._doc(stage, r, pol, ids)}
            self._seen[stage][self._key(r)] = doc
            self._emit(doc)

    def tick(self) -> None:
        """Log new flows, expire idle ones (logging their end). Control thread."""
        with self._lock:
            for stage in self.stages:
                idx = self.dp.stage_index[stage]
                pol, ids = self._context(stage)
                now = time.time()
                if self._out is None:  # age only
                    self.counts["expired"] += fl.expire(self.dp, stage)
                    continue
                self._starts(stage, fl.flows(self.dp, stage), pol, ids, now)
                n_out = ffi.new("unsigned *")
                while True:
                    n = check(lib.pd_conntrack_expire_log(
                        self.dp._cp, idx, 0,
                        ffi.from_buffer("struct pd_flow_rec[]", self._buf), _BATCH, n_out))
                    self.counts["expired"] += n
                    for r in fl.records(self._buf[:n_out[0]]):
                        self._end_doc(stage, r, pol, ids, "idle", now)
                    if n_out[0] < _BATCH:
                        break
            if self._out is not None:
                for st in self.policy_stages:
                    self._denies(st)
                self._out.flush()

    def _denies(self, stage: str) -> None:
        """One ``deny`` line per denied 5-tuple (and rule) since the last tick."""
        st = self.dp.pipeline.stage(stage)
        idx = self.dp.stage_index[stage]
        pol = _policy_of(self.dp, st)
        ids = _Identities(pol)
        lost = ffi.new("uint64_t *")
        agg: dict[tuple, dict[str, Any]] = {}
        hz = lib.pd_tsc_hz() or 1
        now, tsc_now = time.time(), lib.pd_tsc()
        buf = ffi.from_buffer("struct pd_deny_rec[]", self._deny_buf)
        n_lost = 0
        while True:
            n = check(lib.pd_policy_deny_read(self.dp._cp, idx, buf, len(self._deny_buf), lost))
            n_lost += int(lost[0])
            for r in self._deny_buf[:n]:
                fam = int(r["family"])
                key = (fam, int(r["proto"]), r["src"].tobytes(), int(r["sport"]),
                       r["dst"].tobytes(), int(r["dport"]), int(r["rule"]), int(r["reason"]))
                t = round(now - max(0, tsc_now - int(r["tsc"])) / hz, 3)
                a = agg.get(key)
                if a is None:
                    agg[key] = {"first": t, "last": t, "packets": 1, "bytes": int(r["len"]),
                                "src": _addr(fam, r["src"]), "dst": _addr(fam, r["dst"])}
                else:
                    a["last"] = t
                    a["packets"] += 1
                    a["bytes"] += int(r["len"])
            if n < len(self._deny_buf):
                break
        for (_fam, proto, _s, sport, _d, dport, rule, reason), a in agg.items():
            if rule == TAG_DEFAULT or pol is None or rule >= len(pol.rules):
                name = "(default deny)"
            else:
                name = pol.rules[rule].name
            self._emit({"event": "deny", "time": a["first"], "last": a["last"],
                        "stage": stage, "proto": PROTOS.get(proto, proto),
                        "src": a["src"], "sport": sport, "dst": a["dst"], "dport": dport,
                        "verdict": "deny", "rule": name,
                        "reason": cstr(lib.pd_stage_type_drop(b"policy", reason)),
                        "src_identity": ids.of(a["src"]), "dst_identity": ids.of(a["dst"]),
                        "packets": a["packets"], "bytes": a["bytes"]})
        if n_lost:
            self._emit({"event": "deny-lost", "time": round(now, 3), "stage": stage,
                        "packets": n_lost})

    def finish(self) -> None:
        """Log an end line (reason ``stop``) for every flow still live; close the file."""
        with self._lock:
            if self._out is None:
                return
            now = time.time()
            for stage in self.stages:
                pol, ids = self._context(stage)
                for r in fl.records(fl.flows(self.dp, stage)):
                    self._end_doc(stage, r, pol, ids, "stop", now)
            for st in self.policy_stages:
                self._denies(st)
                check(lib.pd_policy_deny_log(self.dp._cp, self.dp.stage_index[st], 0))
            self._out.close()
            self._out = None

    # -- background ----------------------------------------------------------------------
    def start(self) -> FlowLog:
        """Tick every ``interval`` s in a daemon thread (once; nothing without conntrack)."""
        if self.stages and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pydp-flowlog",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._halt.wait(self.interval):
            if self.dp._cp is None:
                return
            self.tick()

    def close(self) -> None:
        """Stop ticking (one last tick), log the flows still live, close the file."""
        if self._closed:
            return
        self._closed = True
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.dp._cp is not None:
            self.tick()
            self.finish()

    def __enter__(self) -> FlowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
