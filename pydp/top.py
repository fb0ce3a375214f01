"""``pydp top``: ports, stages, services/backends, SAs and top flows, refreshed each second.

Plain text with an ANSI home-and-clear between frames when stdout is a
terminal; piped (or with ``--once`` / ``--iterations N``) it prints frames
one after another, so tests and scripts can read it.
"""

from __future__ import annotations

import time
from typing import Any

CLEAR = "\x1b[H\x1b[2J"


def _rate(cur: dict, prev: dict | None, key: str, dt: float) -> float:
    if prev is None or dt <= 0:
        return 0.0
    return max(0, cur.get(key, 0) - prev.get(key, 0)) / dt


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def render(doc: dict[str, Any], prev: dict[str, Any] | None = None, dt: float = 1.0,
           width: int = 100) -> str:
    """One frame from a ``top`` document (and the previous one, for rates)."""
    tot = doc["totals"]
    lines = [f"pydp top - pipeline {doc.get('pipeline', '?')}  up {doc['elapsed_s']:.1f} s  "
             f"memory {doc.get('memory', '')}",
             f"total: rx {tot['rx']}  tx {tot['tx']}  dropped {tot['dropped']}"
             + ("" if tot.get("balanced") else "  (in flight)"), "",
             f"{'PORT':<12}{'RX pps':>10}{'TX pps':>10}{'RX':>14}{'TX':>14}{'missed':>9}"
             f"{'errors':>8}{'drops':>8}"]
    pp = (prev or {}).get("ports", {})
    for name, p in doc["ports"].items():
        lines.append(f"{name:<12}{_si(_rate(p, pp.get(name), 'rx_packets', dt)):>10}"
                     f"{_si(_rate(p, pp.get(name), 'tx_packets', dt)):>10}"
                     f"{p.get('rx_packets', 0):>14}{p.get('tx_packets', 0):>14}"
                     f"{p.get('missed', 0):>9}{p.get('errors', 0):>8}"
                     f"{sum(p.get('drops', {}).values()):>8}")
    lines += ["", f"{'STAGE':<14}{'in pps':>10}{'in':>14}{'cyc/pkt':>9}  drops"]
    sp = (prev or {}).get("stages", {})
    for name, s in doc["stages"].items():
        prv = sp.get(name)
        dpk = s["in"] - (prv or {}).get("in", 0)
        dcy = s.get("cycles", 0) - (prv or {}).get("cycles", 0)
        cyc = f"{dcy / dpk:.1f}" if prv is not None and dpk > 0 and dcy > 0 else "-"
        drops = ", ".join(f"{k} {v}" for k, v in s["drops"].items() if v) or "-"
        lines.append(f"{name:<14}{_si(_rate(s, prv, 'in', dt)):>10}{s['in']:>14}{cyc:>9}  "
                     f"{drops}"[:width])
    svcs = doc.get("services")
    if svcs:
        lines += ["", f"{'SERVICE / BACKEND':<36}{'state':<8}{'pps':>10}{'pkts':>12}"
                      f"{'bytes':>14}{'live':>8}"]
        prevb = {(s["stage"], s["service"], b["backend"]): b
                 for s in (prev or {}).get("services", []) for b in s["backends"]}
        for s in svcs:
            lines.append(f"{s['service'] + ' ' + s['vip'] + ':' + str(s['port']):<36}"
                         f"{s['algorithm']:<8}{'':>10}{s['packets']:>12}{s['bytes']:>14}"
                         f"{s['connections']:>8}")
            for b in s["backends"]:
                pb = prevb.get((s["stage"], s["service"], b["backend"]))
                lines.append(f"{'  ' + b['backend']:<36}{b['state']:<8}"
                             f"{_si(_rate(b, pb, 'packets', dt)):>10}{b['packets']:>12}"
                             f"{b['bytes']:>14}{b['connections']:>8}")
    sas = doc.get("sas")
    if sas:
        lines += ["", f"{'SA':<28}{'dir':<5}{'state':<14}{'pps':>10}{'pkts':>12}"
                      f"{'bytes':>14}{'drops':>8}"]
        prevs = {(a["stage"], a["spi"]): a for a in (prev or {}).get("sas", [])}
        for a in sas:
            pa = prevs.get((a["stage"], a["spi"]))
            lines.append(f"{a['stage'] + ' spi ' + a['spi_hex']:<28}{a['direction']:<5}"
                         f"{a['state']:<14}{_si(_rate(a, pa, 'packets', dt)):>10}"
                         f"{a['packets']:>12}{a['bytes']:>14}{sum(a['drops'].values()):>8}")
    flows = doc.get("top_flows")
    if flows is not None:
        lines += ["", f"{'TOP FLOWS':<48}{'state':<12}{'pkts':>10}{'bytes':>12}"]
        for f in flows:
            t = f"{f['proto']} {f['src']}:{f['sport']} > {f['dst']}:{f['dport']}"
            lines.append(f"{t[:47]:<48}{f['state']:<12}"
                         f"{f['packets_orig'] + f['packets_reply']:>10}"
                         f"{f['bytes_orig'] + f['bytes_reply']:>12}")
        if not flows:
            lines.append("(no flows)")
    return "\n".join(lines)


def run(fetch: Any, out: Any, interval: float = 1.0, iterations: int = 0,
        clear: bool = False) -> None:
    """Fetch and print frames every ``interval`` s; ``iterations`` 0 runs until Ctrl-C.

    The first frame is printed after one interval, so its rates are real.
    """
    prev = fetch()
    t_prev = time.monotonic()
    n = 0
    try:
        while iterations <= 0 or n < iterations:
            time.sleep(interval)
            cur = fetch()
            now = time.monotonic()
            frame = render(cur, prev, now - t_prev)
            out.write((CLEAR if clear else ("\n" if n else "")) + frame + "\n")
            out.flush()
            prev, t_prev = cur, now
            n += 1
    except KeyboardInterrupt:
        return
