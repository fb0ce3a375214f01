#!/usr/bin/env python3
"""Benchmark every pipelines/*.yaml against the same-run bare rx->tx loop.

    sudo python3 benchmarks/run_all.py [--json] [--duration S] [PIPELINE.yaml ...]

Prints a table (or, with --json, one JSON document) and PASS/MISS against
the spec's targets. It is a measurement, not a test: it exits 0 whatever the
figures are, and non-zero only when something crashed. See README.md here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (key in the result, target, label, which pipelines it applies to)
TARGETS = [
    ("ratio", 0.8, "parse+forward >= 0.8 x bare loop", "parse_forward"),
    ("source_ratio", 0.5, "template source >= 0.5 x bare loop", "all"),
]


def verdicts(res: dict[str, Any]) -> list[dict[str, Any]]:
    from pydp.bench import judged_ratio

    out = []
    for key, target, label, scope in TARGETS:
        if scope == "parse_forward" and not res["parse_forward"]:
            continue
        value, basis = judged_ratio(res, key)
        cpu_key = "cpu_ratio" if key == "ratio" else "source_cpu_ratio"
        out.append({"target": label, "key": key, "min": target, "value": value,
                    "judged_on": basis, "wall_value": res[key], "cpu_value": res.get(cpu_key),
                    "verdict": "PASS" if value >= target else "MISS"})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'pipeline':<12} {'bare':>7} {'pipe':>7} {'ratio':>6} {'cpu':>5}  "
            f"{'source':>7} {'ratio':>6} {'cpu':>5}  {'cyc/pkt':>15}  {'drops':>5}")
    lines = [head, f"{'':<12} {'Mpps':>7} {'Mpps':>7} {'':>6} {'':>5}  {'Mpps':>7} {'':>6} "
             f"{'':>5}  {'bare/pipe/src':>15}", "-" * len(head)]
    for r in rows:
        cyc = (f"{r['baseline_cycles_per_packet']:.0f}/{r['cycles_per_packet']:.0f}/"
               f"{r['source_cycles_per_packet']:.0f}")
        lines.append(
            f"{r['pipeline']:<12} {r['baseline_mpps']:>7.2f} {r['mpps']:>7.2f} "
            f"{r['ratio']:>6.2f} {r['cpu_ratio']:>5.2f}  {r['source_mpps']:>7.2f} "
            f"{r['source_ratio']:>6.2f} {r['source_cpu_ratio']:>5.2f}  {cyc:>15}  "
            f"{sum(r['drops'].values()):>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipelines", nargs="*", type=Path,
                    help="pipeline files (default: pipelines/*.yaml)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--flows", type=int, default=10000)
    ap.add_argument("--pkt-size", type=int, default=64, help="frame size with FCS")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds (median)")
    args = ap.parse_args(argv)

    import pydp.eal
    from pydp import ConfigError, NotSupported, Pipeline
    from pydp.bench import format_bench, run_bench

    files = args.pipelines or sorted((ROOT / "pipelines").glob("*.yaml"))
    info = pydp.eal.init()
    results, skipped = [], []
    t0 = time.monotonic()
    for f in files:
        try:
            pl = Pipeline.load(str(f))
            res = run_bench(pl, duration=args.duration, flows=args.flows,
                            pkt_size=args.pkt_size, workers=args.workers, repeat=args.repeat)
        except (NotSupported, ConfigError) as e:
            skipped.append({"file": str(f), "reason": str(e)})
            if not args.json:
                print(f"skip {f.name}: {e}", file=sys.stderr)
            continue
        res["file"] = str(f.resolve().relative_to(ROOT) if f.resolve().is_relative_to(ROOT) else f)
        res["verdicts"] = verdicts(res)
        results.append(res)
        if not args.json:
            print(format_bench(res), file=sys.stderr, flush=True)
    doc = {"memory": info.memory, "tsc_hz": pydp.eal.tsc_hz(), "duration": args.duration,
           "flows": args.flows, "pkt_size": args.pkt_size, "workers": args.workers,
           "repeat": args.repeat, "wall_s": round(time.monotonic() - t0, 1),
           "results": results, "skipped": skipped}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"\nmemory: {info.memory}, {args.flows} flows, {args.pkt_size}-byte frames, "
          f"{args.workers} worker(s), median of {args.repeat} x {args.duration:g} s; "
          "ratio = Mpps / same-run bare Mpps, cpu = the same on on-CPU time")
    print(table(results))
    print()
    for r in results:
        for v in r["verdicts"]:
            cpu = f", on-CPU {v['cpu_value']:.2f}" if v["cpu_value"] is not None else ""
            print(f"{v['verdict']:<4}  {r['pipeline']:<12} {v['target']}: "
                  f"{v['value']:.2f} {v['judged_on']} (wall {v['wall_value']:.2f}{cpu})")
        for n in r.get("notes", []):
            print(f"note  {r['pipeline']:<12} {n}")
    for s in skipped:
        print(f"skip  {Path(s['file']).name}: {s['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
