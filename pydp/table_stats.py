"""Counters per service and backend (lb stages) and per SA (ESP stages).

The C stages keep them per worker (one row per worker slot, plain adds on
the fast path); these functions sum the rows with numpy:

- lb: :func:`lb_counters` is a zero-copy numpy view of the stage's rows
  (``rows x PD_LB_MAX_BACKENDS x [packets, bytes, assigned, pad]``);
  ``connections`` (live flows) is one shared gauge per backend, the one
  least-connections balances on.
- ESP: :func:`sa_counters` copies one SA's rows (``rows x [packets, bytes,
  drops by reason...]``); SAs come and go, so a view could outlive one.

:func:`sections` is what ``pydp stats``, ``pydp top`` and the metric
providers (:mod:`pydp.metrics`) read: ``{"services": [...], "sas": [...]}``,
each key present only when the pipeline has such stages. No key material.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import check, ffi, lib

_LB_FIELDS = 4  # packets, bytes, assigned, pad (struct lb_wctr)


def lb_stages(dp: Any) -> list[str]:
    """Names of the dataplane's lb stages."""
    return [s.name for s in dp.pipeline.stages if s.TYPE == "lb"]


def lb_live(dp: Any, stage: str) -> tuple[list[Any], dict[str, dict[str, int]]]:
    """The live services of an lb stage (in commit order: the service id is the index)
    and their backend ids (service -> backend name -> id)."""
    svc = dp.services.get("lb", {}).get(stage)
    if svc is not None:
        return list(svc.services), svc.ids
    st = dp.pipeline.stage(stage)
    return list(st.service_objects()), getattr(st, "_ids", {})


def lb_counters(dp: Any, stage: str) -> np.ndarray:
    """The per-worker backend counters of ``stage``, as a numpy view (no copy):
    shape (rows, PD_LB_MAX_BACKENDS, 4); [..., 0] packets, 1 bytes, 2 flows assigned."""
    base = ffi.new("uint64_t **")
    rows = ffi.new("unsigned *")
    check(lib.pd_lb_counters(dp._cp, dp.stage_index[stage], base, rows))
    n = int(rows[0]) * lib.PD_LB_MAX_BACKENDS * _LB_FIELDS
    arr = np.frombuffer(ffi.buffer(base[0], n * 8), dtype=np.uint64)
    return arr.reshape(int(rows[0]), lib.PD_LB_MAX_BACKENDS, _LB_FIELDS)


def lb_names(dp: Any, stage: str) -> tuple[dict[int, str], dict[int, str]]:
    """(service id -> service name, backend id -> "service addr:port") of an lb stage."""
    services, ids = lb_live(dp, stage)
    svc = {i: s.name for i, s in enumerate(services)}
    bk = {bid: f"{s} {b}" for s, m in ids.items() for b, bid in m.items()}
    return svc, bk


def lb_stats(dp: Any, stage: str) -> list[dict[str, Any]]:
    """Per service of ``stage``: its backends with packets, bytes (both directions),
    connections_total (flows assigned) and connections (live), summed over workers."""
    from .lb import table
    services, ids = lb_live(dp, stage)
    tot = lb_counters(dp, stage).sum(axis=0)
    out = []
    for s in services:
        bids = [ids.get(s.name, {}).get(b.name, -1) for b in s.backends]
        live = table.backend_stats(dp._cp, dp.stage_index[stage],
                                   [i for i in bids if i >= 0])
        live_by = dict(zip([i for i in bids if i >= 0], live))
        bks = []
        for b, i in zip(s.backends, bids):
            row = tot[i] if i >= 0 else np.zeros(_LB_FIELDS, dtype=np.uint64)
            bks.append({"backend": b.name, "id": i, "state": b.state,
                        "weight": b.weight, "packets": int(row[0]), "bytes": int(row[1]),
                        "connections_total": int(row[2]),
                        "connections": int(live_by.get(i, (0, 0))[0])})
        out.append({"stage": stage, "service": s.name, "vip": s.vip, "port": s.port,
                    "proto": s.proto, "algorithm": s.algorithm,
                    "packets": sum(b["packets"] for b in bks),
                    "bytes": sum(b["bytes"] for b in bks),
                    "connections": sum(b["connections"] for b in bks),
                    "backends": bks})
    return out


def sa_counters(dp: Any, stage: str, spi: int) -> np.ndarray:
    """One SA's per-worker counters (a copy): shape (workers, PD_ESP_SA_NCTR);
    columns packets, bytes, then drops per :func:`pydp.esp.sa_drop_names` reason."""
    buf = np.zeros((lib.PD_MAX_WORKERS, lib.PD_ESP_SA_NCTR), dtype=np.uint64)
    n = check(lib.pd_esp_sa_counters(dp._cp, dp.stage_index[stage], int(spi),
                                     ffi.from_buffer("uint64_t[]", buf), lib.PD_MAX_WORKERS))
    return buf[:n]


def sa_stats(dp: Any, stage: str) -> list[dict[str, Any]]:
    """Per SA of an ESP stage: spi, direction, cipher, state, packets, bytes, drops by
    reason (per-worker rows summed here). Never key material."""
    from . import esp
    names = esp.sa_drop_names()
    out = []
    for sa in esp.sa_list(dp, stage):
        try:
            tot = sa_counters(dp, stage, sa["spi"]).sum(axis=0)
        except Exception:  # noqa: BLE001 - removed since sa_list: skip it
            continue
        out.append({"stage": stage, "spi": sa["spi"], "spi_hex": f"0x{sa['spi']:x}",
                    "direction": sa["direction"], "cipher": sa["cipher"],
                    "tunnel_src": sa["tunnel_src"], "tunnel_dst": sa["tunnel_dst"],
                    "state": sa["state"], "packets": int(tot[0]), "bytes": int(tot[1]),
                    "drops": {names[k]: int(tot[2 + k]) for k in range(len(names))}})
    return out


def sections(dp: Any) -> dict[str, list[dict[str, Any]]]:
    """``services`` (when the pipeline has lb stages) and ``sas`` (ESP stages)."""
    from . import esp
    out: dict[str, list[dict[str, Any]]] = {}
    if dp._cp is None:
        return out
    lbs = lb_stages(dp)
    if lbs:
        out["services"] = [s for st in lbs for s in lb_stats(dp, st)]
    espst = esp.esp_stages(dp)
    if espst:
        out["sas"] = [s for st in espst for s in sa_stats(dp, st)]
    return out


def summary(doc: dict[str, Any]) -> str:
    """Text lines of the ``services`` and ``sas`` sections of a stats document ("" if none)."""
    lines: list[str] = []
    if doc.get("services"):
        lines.append("services:")
        for s in doc["services"]:
            lines.append(f"  {s['stage']}/{s['service']} {s['vip']}:{s['port']}/{s['proto']} "
                         f"{s['algorithm']}: {s['packets']} pkts, {s['bytes']} bytes, "
                         f"{s['connections']} live conns")
            for b in s["backends"]:
                lines.append(f"    {b['backend']:<24} {b['state']:<6} w={b['weight']:<5} "
                             f"{b['packets']:>10} pkts {b['bytes']:>12} bytes "
                             f"{b['connections']:>6} live {b['connections_total']:>8} total")
    if doc.get("sas"):
        lines.append("SAs:")
        for sa in doc["sas"]:
            drops = {r: n for r, n in sa["drops"].items() if n}
            lines.append(f"  {sa['stage']} spi {sa['spi_hex']:<10} {sa['direction']:<3} "
                         f"{sa['cipher']:<18} {sa['state']:<12} {sa['packets']:>10} pkts "
                         f"{sa['bytes']:>12} bytes"
                         + (" drops " + ", ".join(f"{r}={n}" for r, n in drops.items())
                            if drops else ""))
    return "\n".join(lines)
