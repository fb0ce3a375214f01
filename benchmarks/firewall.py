#!/usr/bin/env python3
"""The stateful firewall's cost: parse -> conntrack -> policy (1k, 10k rules) -> forward.

    sudo python3 benchmarks/firewall.py [--duration 2] [--sizes 1000,10000] [--json]

All measured in one process with pydp.bench.run_bench (net_pcap infinite_rx of
10,000 UDP flows, 64-byte frames, into a net_null sink, one worker; each
pipeline against the bare loop measured in the same run, median of 3):

* ``parse+forward``: the baseline the targets are relative to;
* ``firewall N``: parse -> conntrack (confirm mode) -> policy -> forward with
  the mesh policy of benchmarks/mesh.py compiled to about N ACL rules; its
  rule ``loadgen-to-bench`` allows every benchmark flow (UDP 172.16.0.0/16 ->
  10.0.2.0/24:5001), so after the first packet of each flow the packets are
  conntrack hits that the policy passes as ``stateful``;
* ``firewall N mix``: the same but loadgen covers only half the flows: the
  other half is denied (``default-deny``) and looked up in rte_acl for
  every packet, as an attack on a closed port would be;
* ``policy N stateless``: parse -> policy -> forward, no conntrack: every
  packet goes through the class lookup and rte_acl.

Targets (issue 3): the firewall <= 150 cycles per packet and >= 0.4 x
parse+forward (the ratio of packet rates, judged on-CPU when the CPU was
shared, like pydp.bench). A measurement, not a test: exits 0 whatever the
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_CYCLES = 150
TARGET_RATIO = 0.4


def pipelines(n: int, allow_share: float, stateful: bool) -> Any:
    """One benchmark pipeline with the mesh policy of about ``n`` rules."""
    from mesh import gen_mesh

    from pydp import Pipeline
    from pydp.policy import compile_policy
    from pydp.stages import Conntrack, Forward, Parse, Policy

    rules, n_ids = compile_policy(gen_mesh(n, allow_share=allow_share))
    if not stateful:
        return Pipeline("polfwd", ports=["in", "out"], inputs={"in": "parse"}, stages=[
            Parse("parse", next="pol"), Policy("pol", next="fwd").use(rules, n_ids),
            Forward("fwd", port="out")])
    return Pipeline("firewall", ports=["in", "out"], inputs={"in": "parse"}, stages=[
        Parse("parse", next="ct"), Conntrack("ct", next="pol", mode="confirm"),
        Policy("pol", next="fwd", conntrack="ct").use(rules, n_ids),
        Forward("fwd", port="out")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pydp import Pipeline
    from pydp.bench import judged_ratio, run_bench
    from pydp.stages import Forward, Parse

    base = Pipeline("pf", ports=["in", "out"], inputs={"in": "parse"},
                    stages=[Parse("parse", next="fwd"), Forward("fwd", port="out")])
    cases: list[tuple[str, Any]] = [("parse+forward", base)]
    for n in (int(x) for x in args.sizes.split(",")):
        cases += [(f"firewall {n}", pipelines(n, 1.0, True)),
                  (f"firewall {n} mix", pipelines(n, 0.5, True)),
                  (f"policy {n} stateless", pipelines(n, 1.0, False))]
    rows = []
    for name, pl in cases:
        r = run_bench(pl, duration=args.duration, repeat=args.repeat)
        rows.append({"case": name, **r})
    b = rows[0]
    cpu = any(judged_ratio(r, "ratio")[1] == "on-CPU" for r in rows)
    key_mpps, key_cyc = ("cpu_mpps", "cpu_cycles_per_packet") if cpu else ("mpps",
                                                                          "cycles_per_packet")
    out = []
    for r in rows:
        ratio = round(r[key_mpps] / b[key_mpps], 3) if b[key_mpps] else 0.0
        out.append({"case": r["case"], "mpps": r[key_mpps], "cycles_per_packet": r[key_cyc],
                    "vs_parse_forward": ratio, "vs_bare": judged_ratio(r, "ratio")[0],
                    "forwarded_share": round(r["forwarded"]["tx"] / r["forwarded"]["rx"], 3)
                    if r["forwarded"]["rx"] else 0.0,
                    "drops": r["drops"], "memory": r["memory"], "notes": r["notes"]})
    if args.json:
        print(json.dumps({"judged_on": "on-CPU" if cpu else "wall", "rows": out,
                          "raw": rows}, indent=2))
        return 0
    print(f"figures {'on-CPU (the CPU was shared)' if cpu else 'wall-clock'}, "
          f"{rows[0]['memory']}, median of {args.repeat} x {args.duration} s")
    print(f"{'case':<24} {'Mpps':>7} {'cyc/pkt':>8} {'vs p+f':>7} {'vs bare':>8} "
          f"{'fwd':>6}  targets (<= {TARGET_CYCLES} cyc, >= {TARGET_RATIO} x p+f)")
    for r in out:
        verdict = ""
        if r["case"].startswith("firewall"):
            ok = (r["cycles_per_packet"] <= TARGET_CYCLES
                  and r["vs_parse_forward"] >= TARGET_RATIO)
            verdict = "PASS" if ok else "MISS"
        print(f"{r['case']:<24} {r['mpps']:>7.3f} {r['cycles_per_packet']:>8.1f} "
              f"{r['vs_parse_forward']:>7.3f} {r['vs_bare']:>8.3f} {r['forwarded_share']:>6.2f}"
              f"  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
