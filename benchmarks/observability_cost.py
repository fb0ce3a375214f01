#!/usr/bin/env python3
"""What trace and capture cost when they are off: the same pipeline, built with and without them.

    sudo python3 benchmarks/observability_cost.py [--rounds 4] [--duration 1]
        [--pipeline pipelines/forward.yaml] [--json]

Two builds of this source tree: the installed one (trace and capture
compiled in, off: one relaxed load and one predictable branch per rx burst)
and one built here with ``-Dobs=false`` (no armed check in the worker loop
at all). Each measurement is one ``pydp.bench.run_bench`` in a fresh process
(its own EAL; median of 3 alternations of the bare loop and the pipeline),
and the builds alternate ``--rounds`` times, so both see the same machine.
Reported: the medians of the pipeline's on-CPU cycles per packet and of its
ratio to the same-process bare loop, and the cost of "compiled in, off" in
per cent of "compiled out" (target < 2 %). A measurement, not a test: it
exits 0 whatever the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0  # per cent

CHILD = r"""
import json, sys
target = sys.argv[1]
if target != "-":
    # the compiled-out build: bypass the editable install's finder
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "editable" not in type(f).__module__]
    sys.path.insert(0, target)
import pydp
if target != "-":
    import errno
    from pydp._core import ffi, lib
    assert pydp.__file__.startswith(target), pydp.__file__
    # really compiled out: the trace API says so (and touches no pipeline)
    assert lib.pd_trace_start(ffi.NULL, 1, ffi.NULL) == -errno.ENOTSUP
from pydp.bench import run_bench
r = run_bench(sys.argv[2], duration=float(sys.argv[3]), repeat=3)
print(json.dumps({k: r[k] for k in ("cpu_cycles_per_packet", "cycles_per_packet",
                                    "baseline_cpu_cycles_per_packet", "cpu_ratio", "ratio",
                                    "mpps", "cpu_share", "memory", "notes")}))
"""


def build_without(dest: Path) -> None:
    """pip-install this tree with -Dobs=false into ``dest`` (not the venv)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
           "--target", str(dest), "-Csetup-args=-Dobs=false",
           f"-Cbuild-dir={dest}.build", str(ROOT)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def measure(target: str, pipeline: str, duration: float) -> dict:
    """One run_bench in a fresh process with build ``target`` ('-': the installed one)."""
    r = subprocess.run([sys.executable, "-c", CHILD, target, pipeline, str(duration)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"measurement failed ({target}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    """Build, alternate, report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--pipeline", default="pipelines/forward.yaml")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pydp-noobs-") as tmp:
        out_dir = Path(tmp) / "site"
        print(f"building -Dobs=false into {out_dir} ...", file=sys.stderr)
        build_without(out_dir)
        runs: dict[str, list[dict]] = {"out": [], "in_off": []}
        for i in range(a.rounds):
            order = [("out", str(out_dir)), ("in_off", "-")]
            if i % 2:
                order.reverse()
            for name, target in order:
                r = measure(target, a.pipeline, a.duration)
                runs[name].append(r)
                print(f"round {i + 1} {name:<7} {r['cpu_cycles_per_packet']:7.1f} cyc/pkt "
                      f"(bare {r['baseline_cpu_cycles_per_packet']:.1f}), cpu ratio "
                      f"{r['cpu_ratio']:.3f}", file=sys.stderr)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    res = {
        "pipeline": a.pipeline, "rounds": a.rounds, "duration": a.duration,
        "memory": runs["in_off"][0]["memory"],
        "cycles_per_packet": {k: med(k, "cpu_cycles_per_packet") for k in runs},
        "bare_cycles_per_packet": {k: med(k, "baseline_cpu_cycles_per_packet") for k in runs},
        "cpu_ratio": {k: med(k, "cpu_ratio") for k in runs},
        "runs": {k: [r["cpu_cycles_per_packet"] for r in v] for k, v in runs.items()},
    }
    c_out, c_in = res["cycles_per_packet"]["out"], res["cycles_per_packet"]["in_off"]
    res["cost_percent"] = round(100.0 * (c_in - c_out) / c_out, 2) if c_out else None
    r_out, r_in = res["cpu_ratio"]["out"], res["cpu_ratio"]["in_off"]
    res["ratio_cost_percent"] = round(100.0 * (r_out - r_in) / r_out, 2) if r_out else None
    res["target_percent"] = TARGET
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{a.pipeline}: trace+capture compiled out vs compiled in and off "
          f"({a.rounds} rounds, {res['memory']})")
    print(f"  on-CPU cycles/packet, median: out {c_out:.1f}   in, off {c_in:.1f}   "
          f"cost {res['cost_percent']:+.2f} % (target < {TARGET:g} %)")
    print(f"  ratio to the same-process bare loop: out {r_out:.3f}   in, off {r_in:.3f}   "
          f"cost {res['ratio_cost_percent']:+.2f} %")
    print(f"  runs (cyc/pkt): out {res['runs']['out']}  in, off {res['runs']['in_off']}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("needs root (DPDK)")
    main()
