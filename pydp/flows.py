"""Read a conntrack stage's flow table as numpy, and age it.

The C core copies live flows into an array of ``struct pd_flow_rec``
(``csrc/pd_api.h``) that numpy owns: :data:`FLOW_DTYPE` has the struct's
exact layout, so no field is parsed in Python::

    f = flows(dp, "ct")
    busy = f[f["packets_orig"] + f["packets_reply"] > 1000]
    print(addresses(busy, "src"), busy["sport"], state_names(busy))

Ageing runs on the control thread: call :func:`expire` periodically (every
second or so). It deletes flows idle longer than their timeout; the workers
never wait for it.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import numpy as np

from ._core import check, ffi, lib
from .errors import InvalidArgument
from .stages import Conntrack

if TYPE_CHECKING:
    from .runtime import Dataplane


def _dtype() -> np.dtype:
    fields = [("family", "u1"), ("proto", "u1"), ("state", "u1"), ("tcp_state", "u1"),
              ("sport", "u2"), ("dport", "u2"), ("src", "u1", (16,)), ("dst", "u1", (16,)),
              ("tag", "u4"), ("index", "u4"),
              ("packets_orig", "u8"), ("packets_reply", "u8"),
              ("bytes_orig", "u8"), ("bytes_reply", "u8"),
              ("age_ms", "u8"), ("idle_ms", "u8"), ("lb", "u4"),
              ("nat_sport", "u2"), ("nat_dport", "u2"),
              ("nat_src", "u1", (16,)), ("nat_dst", "u1", (16,))]
    dt = np.dtype({
        "names": [f[0] for f in fields],
        "formats": [np.dtype((f[1], f[2])) if len(f) == 3 else np.dtype(f[1]) for f in fields],
        "offsets": [ffi.offsetof("struct pd_flow_rec", f[0]) for f in fields],
        "itemsize": ffi.sizeof("struct pd_flow_rec"),
    })
    # native byte order, as the C struct: checked once against cffi's view
    assert dt.itemsize == ffi.sizeof("struct pd_flow_rec")
    return dt


#: numpy twin of ``struct pd_flow_rec``
FLOW_DTYPE = _dtype()

#: flow states by number (the ``state`` field)
STATES = {lib.PD_CT_NEW: "new", lib.PD_CT_ESTABLISHED: "established",
          lib.PD_CT_CLOSING: "closing"}

#: the precise states (the ``tcp_state`` field): the TCP state machine's
TCP_STATES = {lib.PD_CT_NEW: "syn_sent", lib.PD_CT_SYN_RECV: "syn_recv",
              lib.PD_CT_ESTABLISHED: "established", lib.PD_CT_FIN_WAIT: "fin_wait",
              lib.PD_CT_TIME_WAIT: "time_wait", lib.PD_CT_CLOSING: "close"}


def _stage(dp: Dataplane, stage: str) -> int:
    st = dp.pipeline.stage(stage)
    if not isinstance(st, Conntrack):
        raise InvalidArgument(f"stage '{stage}' is a {st.TYPE}, not a conntrack stage")
    if dp._cp is None:
        raise InvalidArgument("the dataplane is closed")
    return dp.stage_index[stage]


def count(dp: Dataplane, stage: str) -> int:
    """How many flows the table holds."""
    return check(lib.pd_conntrack_count(dp._cp, _stage(dp, stage)))


def flows(dp: Dataplane, stage: str) -> np.ndarray:
    """The live flows of conntrack stage ``stage``: a structured array of :data:`FLOW_DTYPE`.

    ``src``/``dst``/``sport``/``dport`` are the original direction (the
    first packet's); addresses are 16 raw bytes, IPv4 in the first 4 (see
    :func:`addresses`); ports are host order (ICMP echo: the identifier).
    ``*_orig``/``*_reply`` count each direction. A snapshot: workers may
    keep running while it is taken.
    """
    idx = _stage(dp, stage)
    # room for flows created between the count and the copy
    room = check(lib.pd_conntrack_count(dp._cp, idx)) + 1024
    out = np.zeros(room, dtype=FLOW_DTYPE)
    n = check(lib.pd_conntrack_dump(dp._cp, idx, ffi.from_buffer("struct pd_flow_rec[]", out),
                                    room))
    return out[:n]


def expire(dp: Dataplane, stage: str, max_scan: int = 0) -> int:
    """Delete flows idle past their timeout; returns how many.

    ``max_scan``: how many table slots to look at, starting where the
    previous call stopped (0: the whole table), to spread the work of a big
    table over several calls.
    """
    if max_scan < 0:
        raise InvalidArgument(f"max_scan must be >= 0, not {max_scan}")
    return check(lib.pd_conntrack_expire(dp._cp, _stage(dp, stage), max_scan))


def addresses(recs: np.ndarray, field: str = "src") -> list[str]:
    """The ``src``, ``dst``, ``nat_src`` or ``nat_dst`` addresses of flow records as strings."""
    if field not in ("src", "dst", "nat_src", "nat_dst"):
        raise InvalidArgument(f"field must be 'src', 'dst', 'nat_src' or 'nat_dst', "
                              f"not {field!r}")
    out = []
    for fam, raw in zip(recs["family"].tolist(), recs[field]):
        b = raw.tobytes()
        out.append(str(ipaddress.IPv4Address(b[:4]) if fam == 4 else ipaddress.IPv6Address(b)))
    return out


def state_names(recs: np.ndarray) -> list[str]:
    """The ``state`` of flow records as names (new, established, closing)."""
    return [STATES.get(s, str(s)) for s in recs["state"].tolist()]


def tcp_state_names(recs: np.ndarray) -> list[str]:
    """The precise state of flow records (TCP: syn_sent ... time_wait, close;
    other protocols: new or established)."""
    out = []
    for p, s in zip(recs["proto"].tolist(), recs["tcp_state"].tolist()):
        out.append(TCP_STATES.get(s, str(s)) if p == 6 else STATES.get(s, str(s)))
    return out


__all__ = ["FLOW_DTYPE", "STATES", "TCP_STATES", "addresses", "count", "expire", "flows",
           "records", "state_names", "tcp_state_names"]


def records(recs: np.ndarray, addr: str | None = None, port: int | None = None,
            state: str | None = None, limit: int = 0) -> list[dict]:
    """Flow records as dicts, filtered by address (either side), port (either side), state
    (new, established, closing, or a precise TCP state: syn_sent ... time_wait, close)."""
    src, dst = addresses(recs, "src"), addresses(recs, "dst")
    nsrc, ndst = addresses(recs, "nat_src"), addresses(recs, "nat_dst")
    names = state_names(recs)
    detail = tcp_state_names(recs)
    known = list(STATES.values()) + [n for n in TCP_STATES.values() if n not in STATES.values()]
    if state is not None and state not in known:
        raise InvalidArgument(f"state: {state!r} is not one of {', '.join(known)}")
    out = []
    for i in range(len(recs)):
        r = recs[i]
        if addr is not None and addr not in (src[i], dst[i]):
            continue
        if port is not None and port not in (int(r["sport"]), int(r["dport"])):
            continue
        if state is not None and state not in (names[i], detail[i]):
            continue
        out.append({"proto": int(r["proto"]), "src": src[i], "sport": int(r["sport"]),
                    "dst": dst[i], "dport": int(r["dport"]), "state": names[i],
                    "packets_orig": int(r["packets_orig"]),
                    "packets_reply": int(r["packets_reply"]),
                    "bytes_orig": int(r["bytes_orig"]), "bytes_reply": int(r["bytes_reply"]),
                    "age_ms": int(r["age_ms"]), "idle_ms": int(r["idle_ms"]),
                    "tag": int(r["tag"]), "index": int(r["index"]), "tcp_state": detail[i],
                    "backend": int(r["lb"]) - 1 if r["lb"] else None,
                    "nat": ({"src": nsrc[i], "sport": int(r["nat_sport"]), "dst": ndst[i],
                             "dport": int(r["nat_dport"])} if r["nat_dport"] else None)})
        if limit and len(out) >= limit:
            break
    return out
