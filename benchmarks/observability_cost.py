#!/usr/bin/env python3
"""What trace and capture cost when they are off: the same pipeline, built with and without them.

    sudo python3 benchmarks/observability_cost.py [--rounds 4] [--duration 1]
        [--pipeline pipelines/forward.yaml] [--json] [--armed]

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

``--armed`` measures something else, in one process of the installed build:
the pipeline with nothing armed, with a trace armed and with a stage capture
armed, both with a pcap filter that matches nothing (so every burst takes
the armed path and the JIT-ed BPF filter runs on every packet, but nothing
is recorded): what waiting for a rare packet costs.
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


def armed(pipeline: str, rounds: int, duration: float) -> dict:
    """In this process (the installed build): off vs armed with filters nothing matches.

    The cost of having a trace or a capture waiting: every burst takes
    pd_obs_burst and the BPF filter runs on every packet (JIT), but nothing
    is recorded or copied.
    """
    from pydp import Dataplane, Pipeline, eal
    from pydp import trace as tr
    from pydp.bench import (
        _feed_ports,
        _measure,
        _null_devargs,
        _pcap_devargs,
        _pool,
        _write_pcap,
        bench_flows,
    )
    from pydp.capture import Capture
    eal.init()
    pl = Pipeline.load(pipeline)
    fed, _sink = _feed_ports(pl)
    frames, _src = bench_flows(pl, 10000, 64)
    nomatch = "udp port 1"  # the bench traffic is UDP 1024 -> 5001
    with tempfile.TemporaryDirectory(prefix="pydp-obsarm-") as tmp:
        pcap = Path(tmp) / "flows.pcap"
        _write_pcap(frames, pcap)
        ports = {p: (_pcap_devargs(pcap, 1) if p == fed else _null_devargs()) for p in pl.ports}
        runs: dict[str, list[float]] = {"off": [], "trace_armed": [], "capture_armed": []}
        with Dataplane(pl, ports, pool_mbufs=_pool(len(pl.ports), 1, len(pl.stages),
                                                   len(frames))) as dp:
            first = pl.input_map()[fed]
            for i in range(rounds):
                for mode in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                    cap = None
                    if mode == "trace_armed":
                        tr.start(dp, 1, nomatch)
                    elif mode == "capture_armed":
                        cap = Capture(dp, Path(tmp) / "c.pcapng", stage=first, filter=nomatch)
                    m = _measure(dp, fed, duration, min(0.5, duration / 4))
                    if mode == "trace_armed":
                        tr.stop(dp)
                    if cap is not None:
                        cap.stop()
                    runs[mode].append(m["cpu_cycles_per_packet"])
                    print(f"armed round {i + 1} {mode:<14} {m['cpu_cycles_per_packet']:7.1f} "
                          "cyc/pkt", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"cycles_per_packet": med, "runs": runs, "filter": nomatch,
            "cost_percent": {k: round(100.0 * (v - med["off"]) / med["off"], 2)
                             for k, v in med.items() if k != "off"}}


def main() -> None:
    """Build, alternate, report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--pipeline", default="pipelines/forward.yaml")
    ap.add_argument("--armed", action="store_true",
                    help="Instead: off vs armed with a filter nothing matches (this build).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.armed:
        res = armed(a.pipeline, a.rounds, a.duration)
        if a.json:
            print(json.dumps(res, indent=2))
            return
        c = res["cycles_per_packet"]
        print(f"{a.pipeline}: off vs armed, filter '{res['filter']}' matching nothing "
              f"({a.rounds} rounds)")
        print(f"  on-CPU cycles/packet, median: off {c['off']:.1f}   trace armed "
              f"{c['trace_armed']:.1f} ({res['cost_percent']['trace_armed']:+.1f} %)   "
              f"capture armed {c['capture_armed']:.1f} "
              f"({res['cost_percent']['capture_armed']:+.1f} %)")
        return
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
