"""Services -> the C structs of the lb stage: commit, preview, stats, Maglev builds."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core import check, ffi, lib
from .model import ALGORITHMS, PROTOS, STATES, Service


def _raw(addr: str) -> bytes:
    b = ipaddress.ip_address(addr).packed
    return b + bytes(16 - len(b))


def to_c(services: Sequence[Service]) -> tuple[Any, Any, int, int]:
    """cffi arrays (services, backends) for pd_lb_commit / pd_lb_preview."""
    n_bk = sum(len(s.backends) for s in services)
    svcs = ffi.new("struct pd_lb_service[]", max(1, len(services)))
    bks = ffi.new("struct pd_lb_backend[]", max(1, n_bk))
    j = 0
    for i, s in enumerate(services):
        c = svcs[i]
        c.family = s.family
        c.proto = PROTOS[s.proto]
        c.port = s.port
        c.vip = _raw(s.vip)
        c.algo = ALGORITHMS[s.algorithm]
        c.snat = 1 if s.snat else 0
        if s.snat:
            c.snat_addr = _raw(s.snat)
        c.table_size = s.table_size
        c.first = j
        c.n = len(s.backends)
        for b in s.backends:
            cb = bks[j]
            cb.addr = _raw(b.addr)
            cb.port = b.port
            cb.state = STATES[b.state]
            cb.weight = b.weight
            cb.id = -1
            j += 1
    return svcs, bks, len(services), n_bk


def commit(cp: Any, idx: int, services: Sequence[Service]) -> dict[str, dict[str, int]]:
    """Publish ``services`` (RCU); returns service -> backend name -> backend id."""
    svcs, bks, n, nb = to_c(services)
    check(lib.pd_lb_commit(cp, idx, svcs, n, bks, nb))
    out: dict[str, dict[str, int]] = {}
    j = 0
    for s in services:
        out[s.name] = {}
        for b in s.backends:
            out[s.name][b.name] = int(bks[j].id)
            j += 1
    return out


def preview(cp: Any, idx: int, services: Sequence[Service]) -> dict[str, dict[str, int]]:
    """What committing ``services`` would move, per service (nothing is published)."""
    svcs, bks, n, nb = to_c(services)
    out = ffi.new("struct pd_lb_change[]", max(1, n))
    check(lib.pd_lb_preview(cp, idx, svcs, n, bks, nb, out))
    return {s.name: {"buckets": int(out[i].buckets), "buckets_moved": int(out[i].buckets_moved),
                     "flows": int(out[i].flows), "flows_moved": int(out[i].flows_moved),
                     "flows_lost_backend": int(out[i].flows_lost_backend)}
            for i, s in enumerate(services)}


def backend_stats(cp: Any, idx: int, ids: Sequence[int]) -> list[tuple[int, int]]:
    """(live connections, flows ever assigned) of each backend id."""
    if not ids:
        return []
    arr = ffi.new("int32_t[]", list(ids))
    out = ffi.new("struct pd_lb_bstats[]", len(ids))
    check(lib.pd_lb_backend_stats(cp, idx, arr, len(ids), out))
    return [(int(out[i].conns), int(out[i].assigned)) for i in range(len(ids))]


def maglev_build(keys: Sequence[int], weights: Sequence[int],
                 m: int = 65537) -> tuple[np.ndarray, float]:
    """Build a weighted Maglev table in C: (table of backend indexes, seconds)."""
    n = len(keys)
    table = np.empty(m, dtype=np.int32)
    k = ffi.new("uint64_t[]", [int(x) & (2**64 - 1) for x in keys] or [0])
    w = ffi.new("uint32_t[]", list(weights) or [0])
    ns = check(lib.pd_maglev_build(k, w, n, m, ffi.from_buffer("int32_t[]", table)))
    return table, ns / 1e9
