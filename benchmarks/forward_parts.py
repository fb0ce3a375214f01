#!/usr/bin/env python3
"""What each part of parse + forward costs: variants of forward.yaml in one process.

One EAL, one pcap of 10k flows (as `pydp bench`), five dataplanes built
once and measured in turn, ``--rounds`` times, each run ``--duration`` s
after a short warm-up:

* ``bare``: the C core's bare rx->tx loop (the `pydp bench` baseline);
* ``full``: parse (IPv4 checksum verified) -> forward with MAC rewrite;
* ``no-cksum``: the same, ``verify_checksum: false``;
* ``no-mac``: the same, forward keeps both MACs;
* ``parse-only``: parse -> forward keeping MACs, checksum off.

Alternating the variants run by run in one process is what makes a
difference of one or two cycles visible on a noisy VM; the minimum of each
is the least disturbed figure, the median of the per-round ratios the
robust one.

    sudo python3 benchmarks/forward_parts.py [--duration 1] [--rounds 12] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pydp import Dataplane, Pipeline, eal  # noqa: E402
from pydp import bench as B  # noqa: E402
from pydp.stages import Forward, Parse  # noqa: E402

DST = "02:00:00:00:00:02"


def variant(verify: bool, mac: bool) -> Pipeline:
    """parse -> forward with the checksum check and the MAC rewrite on or off."""
    fwd = (Forward("fwd", port="out", dst_mac=DST) if mac
           else Forward("fwd", port="out", keep_src_mac=True))
    return Pipeline("parts", ports=["in", "out"], inputs={"in": "parse"},
                    stages=[Parse("parse", next="fwd", verify_checksum=verify), fwd])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.duration <= 0 or args.rounds < 1:
        ap.error("--duration must be positive and --rounds at least 1")
    info = eal.init()
    pkts, _ = B.bench_flows(variant(True, True), 10000, 64)
    variants = {"full": (True, True), "no-cksum": (False, True), "no-mac": (True, False),
                "parse-only": (False, False)}
    with tempfile.TemporaryDirectory(prefix="pydp-parts-") as tmp:
        pcap = Path(tmp) / "flows.pcap"
        B._write_pcap(pkts, pcap)
        bare_pl = Pipeline("bare", ports=["in", "out"], inputs={"in": "fwd"},
                           stages=[Forward("fwd", port="out", keep_src_mac=True)])
        dps: dict[str, Dataplane] = {"bare": B.BareDataplane(
            bare_pl, {"in": B._pcap_devargs(pcap, 1), "out": B._null_devargs()},
            bare_in="in", bare_out="out", workers=1, pool_mbufs=B._pool(2, 1, 0, 10000))}
        try:
            for name, (verify, mac) in variants.items():
                dps[name] = Dataplane(variant(verify, mac),
                                      {"in": B._pcap_devargs(pcap, 1), "out": B._null_devargs()},
                                      workers=1, pool_mbufs=B._pool(2, 1, 2, 10000))
            runs: dict[str, list[float]] = {k: [] for k in dps}
            for _ in range(args.rounds):
                for k, dp in dps.items():
                    m = B._measure(dp, "in", args.duration, min(0.3, args.duration / 2))
                    runs[k].append(m["cpu_cycles_per_packet"] or m["cycles_per_packet"])
        finally:
            for dp in dps.values():
                dp.close()
    bare = runs["bare"]
    rows = []
    for k, v in runs.items():
        ratios = [b / x for b, x in zip(bare, v) if x]
        rows.append({"variant": k, "min_cycles": round(min(v), 1),
                     "median_cycles": round(statistics.median(v), 1),
                     "ratio_min": round(min(bare) / min(v), 3),
                     "ratio_median_of_rounds": round(statistics.median(ratios), 3),
                     "runs": [round(x, 1) for x in v]})
    if args.json:
        print(json.dumps({"memory": info.memory, "rounds": args.rounds,
                          "duration": args.duration, "rows": rows}, indent=2))
        return 0
    print(f"parse + forward by parts ({info.memory}; on-CPU TSC cycles/pkt, "
          f"{args.rounds} alternating rounds of {args.duration:g} s)")
    print(f"{'variant':12} {'min':>6} {'median':>7} {'bare/min':>9} {'ratio (median)':>15}")
    for r in rows:
        print(f"{r['variant']:12} {r['min_cycles']:6.1f} {r['median_cycles']:7.1f} "
              f"{r['ratio_min']:9.3f} {r['ratio_median_of_rounds']:15.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
