#!/usr/bin/env python3
"""How long a policy commit takes: 1k, 10k and 100k rules, compiled to rte_acl and published.

    sudo python3 benchmarks/policy_apply.py [--sizes 1000,10000,100000] [--repeat 3]
                     [--shapes mesh,policy,random] [--v6 0.2] [--json] [--cycles]

Three rule set shapes (``--v6``: the share of IPv6 rules, or of dual-stack
identities for ``mesh``); a size is the number of ACL rules the policy
compiles to (pydp.policy.compile_policy: every rule's source prefixes x
destination prefixes x port entries), the count rte_acl got before the
class merge:

* ``mesh`` (the default, see benchmarks/mesh.py): an identity-based policy as
  a service mesh produces it: workload identities of 1-8 scattered pod /32s
  (and /128s), external CIDR identities, app->app, tier->tier,
  namespace->app, external->web, deny and cidr-with-except rules, port
  entries with ranges. Built as a pydp Policy; the Python compile is timed.
* ``policy``: address groups of 1..3 random prefixes, each policy rule the
  cross product group x group x (proto, port) entries, one in ten a deny.
* ``random``: every ACL rule with its own random prefixes (nothing merges).

The commit runs against a started pipeline (parse -> policy -> forward on
net_null ports) while the template source sends 100 kpps of the benchmark
flows (UDP 172.16.0.0/16 -> 10.0.2.0/24:5001), which every rule set allows
(one rule among the others), so the RCU grace period is a real one and
``lost`` (packets not forwarded while the commits ran) must be 0. Per size it
prints the median of ``--repeat`` commits of the same rule set:

* ``pycompile``: mesh only: compile_policy_array (Policy -> the C array),
  Python, as a policy stage or ``pydp policy apply`` runs it;
* ``marshal``: packing AclRules into the C array (rules_array; ~0 for mesh,
  which is an array already);
* ``compile``: the core: classes, merge, prefix tables, rte_acl builds;
* ``publish``: pd_rcu_swap: pointer exchange, grace period, free of the old table;
* ``total``: the acl.commit() call seen from Python, marshal included;
* ``cpu``: the thread CPU time of the commit call (compile + publish): on a
  shared machine, wall time also counts other processes' time slices.
* ``acl``: the rules rte_acl got after the class merge.

Targets (compile + publish): 10k rules <= 100 ms, 100k rules <= 1 s; judged on
wall time, and on ``cpu`` when the machine is shared (the output says which).
``--cycles`` also runs pydp.bench on parse -> forward and on parse -> policy
(10k mesh rules) -> forward, and prints the cycles per packet the policy
stage adds.

A measurement, not a test: exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {10000: 0.100, 100000: 1.0}


def gen_random(n: int, v6_share: float = 0.2, seed: int = 1) -> tuple[list, int]:
    """About ``n`` AclRules, each with its own random prefixes; returns (rules, n_ids).

    Policy rules of 5..15 ACL rules; one in ten denies a /16 (/48) above every
    allow. Few rules share a prefix, so rte_acl's tries branch early.
    """
    from pydp.acl import AclRule

    rnd = random.Random(seed)
    rules: list = []
    rid = 0
    n_pol = max(1, n // 10)
    ports = [22, 53, 80, 123, 443, 5432, 6379, 8080, 8443, 9090]
    while len(rules) < n:
        deny = rnd.random() < 0.1
        prio = (2 * n_pol if deny else n_pol) - rid % n_pol  # denies above allows
        size = min(n - len(rules), rnd.randint(5, 15))
        for _ in range(size):
            v6 = rnd.random() < v6_share
            if v6:
                src = ipaddress.IPv6Network((0xFD00 << 112 | rnd.getrandbits(32) << 64,
                                             rnd.choice((48, 56, 64))), strict=False)
                dst = ipaddress.IPv6Network((0xFD01 << 112 | rnd.getrandbits(48) << 64
                                             | rnd.getrandbits(16), rnd.choice((64, 128))),
                                            strict=False)
            else:
                src = ipaddress.IPv4Network((10 << 24 | rnd.getrandbits(16) << 8,
                                             rnd.choice((16, 24, 24, 32))), strict=False)
                dst = ipaddress.IPv4Network((10 << 24 | 1 << 23 | rnd.getrandbits(23),
                                             rnd.choice((24, 32, 32))), strict=False)
            if deny:
                rules.append(AclRule(rid, prio, src=ipaddress.ip_network(
                    (src.network_address, 16 if not v6 else 48), strict=False), action="deny"))
                continue
            proto = rnd.choice((6, 17))
            p = rnd.choice(ports)
            dport = (p, p) if rnd.random() < 0.8 else (p, p + rnd.randint(1, 100))
            rules.append(AclRule(rid, prio, proto=proto, src=src, dst=dst, dport=dport,
                                 action="allow"))
        rid += 1
    return rules, rid


def gen_policy(n: int, v6_share: float = 0.2, seed: int = 1) -> tuple[list, int]:
    """About ``n`` AclRules shaped as pydp.policy compiles them; returns (rules, n_ids).

    n/50 address groups (labels) of 1..3 prefixes (/24 or /32; /64 or /128);
    each policy rule allows (one in ten: denies, above every allow) group A to
    group B on 1..3 (proto, port or small range) entries, and expands to the
    cross product. Prefixes are shared by many rules, as in a real policy.
    """
    from pydp.acl import AclRule

    rnd = random.Random(seed)
    groups: dict[int, list[list]] = {4: [], 6: []}
    for _ in range(max(4, n // 50)):
        fam = 6 if rnd.random() < v6_share else 4
        nets = []
        for _ in range(rnd.randint(1, 3)):
            host = rnd.random() < 0.5
            if fam == 6:
                v = 0xFD00 << 112 | rnd.getrandbits(16) << 64
                nets.append(ipaddress.IPv6Network((v | rnd.getrandbits(16), 128) if host
                                                  else (v, 64)))
            else:
                nets.append(ipaddress.IPv4Network((10 << 24 | rnd.getrandbits(24), 32) if host
                                                  else (10 << 24 | rnd.getrandbits(16) << 8, 24)))
        groups[fam].append(nets)
    for fam in (4, 6):
        if not groups[fam]:
            groups[fam].append([ipaddress.ip_network("10.0.0.0/24" if fam == 4 else "fd00::/64")])
    common = [22, 53, 80, 123, 443, 5432, 6379, 8080, 8443, 9090]
    rules: list = []
    rid = 0
    n_pol = max(1, n // 8)
    while len(rules) < n:
        fam = 6 if rnd.random() < v6_share else 4
        a, b = rnd.choice(groups[fam]), rnd.choice(groups[fam])
        deny = rnd.random() < 0.1
        prio = (2 * n_pol if deny else n_pol) - rid % n_pol
        ports = []
        for _ in range(rnd.randint(1, 3)):
            p = rnd.choice(common)
            ports.append((rnd.choice((6, 17)),
                          (p, p) if rnd.random() < 0.8 else (p, p + rnd.randint(1, 100))))
        act = "deny" if deny else "allow"
        rules += [AclRule(rid, prio, fam, proto, s, d, None, pr, act)
                  for s in a for d in b for proto, pr in ports]
        rid += 1
    return rules[:n], rid


def gen_mesh_rules(n: int, v6_share: float = 0.2, seed: int = 1) -> tuple[list, int, float]:
    """The mesh policy (benchmarks/mesh.py) compiled as a stage or `pydp policy apply`
    does (compile_policy_array: already the C array): (rules, n_ids, compile seconds)."""
    from mesh import gen_mesh

    from pydp.policy import compile_policy_array

    pol = gen_mesh(n, v6_share, seed)
    t0 = time.perf_counter()
    rules, n_ids = compile_policy_array(pol)
    return rules, n_ids, time.perf_counter() - t0


def _with_bench_rule(rules: list, n_ids: int) -> tuple[list, int]:
    """Add the rule allowing the benchmark flows (the mesh has its own)."""
    from pydp.acl import AclRule

    return rules + [AclRule(n_ids, 1, proto=17, src="172.16.0.0/16", dst="10.0.2.0/24",
                            dport=5001, action="allow")], n_ids + 1


SHAPES = {"mesh": None, "policy": gen_policy, "random": gen_random}


def make_rules(shape: str, n: int, v6_share: float) -> tuple[list, int, float | None]:
    """(rules, n_ids, Python compile seconds or None) of one shape and size."""
    if shape == "mesh":
        return gen_mesh_rules(n, v6_share)
    rules, n_ids = SHAPES[shape](n, v6_share)
    return (*_with_bench_rule(rules, n_ids), None)


def measure_commits(shapes: list[str], sizes: list[int], repeat: int,
                    v6_share: float) -> list[dict[str, Any]]:
    """Commit each rule set ``repeat`` times into a running pipeline; medians per set."""
    from pydp import Dataplane, Pipeline, acl
    from pydp.bench import bench_flows
    from pydp.stages import Forward, Parse, Policy

    pl = Pipeline("polbench", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="pol"), Policy("pol", next="fwd"),
                          Forward("fwd", port="out")])
    _, src = bench_flows(pl, 10000, 64)
    src.rate_pps = 100_000
    out = []
    with Dataplane(pl, ports={"in": "net_null_pa0,no-rx=1", "out": "net_null_pa1,no-rx=1"},
                   sources={"in": src}) as dp:
        # the benchmark flows are allowed before the source starts: only commits count
        acl.commit(dp, "pol", *_with_bench_rule([], 0))
        dp.start()
        for shape in shapes:
            for n in sizes:
                rules, n_ids, pyc = make_rules(shape, n, v6_share)
                runs = []
                for _ in range(repeat):
                    # back to the one-rule policy first, twice (not measured): a
                    # commit of the same rules again would share the published
                    # contexts (policy.c acl_get), and the spare prefix tables
                    # would already hold them; so every measured commit is cold
                    for _ in range(2):
                        acl.commit(dp, "pol", *_with_bench_rule([], 0))
                    st0 = dp.stats()
                    t0 = time.perf_counter()
                    arr = rules if isinstance(rules, np.ndarray) else acl.rules_array(rules)
                    t1, c1 = time.perf_counter(), time.thread_time()
                    acl.commit(dp, "pol", arr, n_ids)
                    t2, c2 = time.perf_counter(), time.thread_time()
                    st1 = dp.stats()
                    inf = acl.info(dp, "pol")
                    runs.append({"marshal_s": t1 - t0, "compile_s": inf["build_ns"] / 1e9,
                                 "publish_s": inf["publish_ns"] / 1e9, "total_s": t2 - t0,
                                 "commit_cpu_s": c2 - c1,
                                 "dropped": st1.dropped - st0.dropped,
                                 "acl_built": inf["acl_built"]})
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                row = {"shape": shape, "rules": len(rules), "acl_rules4": inf["n_rules4"],
                       "acl_rules6": inf["n_rules6"], "acl_merged": inf["n_acl"],
                       "classes": inf["n_classes"], "ids": n_ids, "pycompile_s": pyc,
                       **med, "lost": sum(r["dropped"] for r in runs), "runs": runs}
                target = TARGETS_S.get(n)
                if target is not None:
                    wall = med["compile_s"] + med["publish_s"]
                    row["target_s"] = target
                    row["verdict"] = "PASS" if wall <= target else "MISS"
                    row["cpu_verdict"] = "PASS" if med["commit_cpu_s"] <= target else "MISS"
                out.append(row)
        dp.stop()
        st = dp.stats()
        balanced = st.balanced()
        total_lost = st.rx - st.tx
    for r in out:
        r["traffic_balanced"] = balanced
        r["traffic_not_forwarded"] = total_lost
    return out


def measure_cycles(n_rules: int, duration: float) -> dict[str, Any]:
    """Cycles per packet of parse -> forward, and of parse -> policy -> forward (pydp.bench)."""
    from pydp import Pipeline
    from pydp.bench import run_bench
    from pydp.stages import Forward, Parse, Policy

    base = Pipeline("pf", ports=["in", "out"], inputs={"in": "parse"},
                    stages=[Parse("parse", next="fwd"), Forward("fwd", port="out")])
    # the mesh allows the benchmark flows (UDP 172.16.0.0/16 -> 10.0.2.0/24:5001)
    rules, n_ids, _ = gen_mesh_rules(n_rules, 0.2)
    pol = Pipeline("ppf", ports=["in", "out"], inputs={"in": "parse"},
                   stages=[Parse("parse", next="pol"),
                           Policy("pol", next="fwd").use(rules, n_ids),
                           Forward("fwd", port="out")])
    a = run_bench(base, duration=duration)
    b = run_bench(pol, duration=duration)
    keys = ("mpps", "cycles_per_packet", "cpu_cycles_per_packet", "baseline_mpps",
            "baseline_cpu_cycles_per_packet", "drops", "notes")
    return {"rules": len(rules), "parse_forward": {k: a[k] for k in keys},
            "parse_policy_forward": {k: b[k] for k in keys},
            "policy_cycles_per_packet": round(b["cpu_cycles_per_packet"]
                                              - a["cpu_cycles_per_packet"], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--shapes", default="mesh,policy,random",
                    help="rule set shapes: mesh (identity-based), policy (cross products), "
                         "random")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--v6", type=float, default=0.2, help="share of IPv6 rules")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cycles", action="store_true",
                    help="also measure cycles/packet of the stage (pydp.bench)")
    ap.add_argument("--duration", type=float, default=2.0, help="--cycles: s per run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import pydp.eal

    pydp.eal.init()
    sizes = [int(x) for x in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"--shapes: unknown shape '{s}' (known: {', '.join(SHAPES)})")
    rows = measure_commits(shapes, sizes, args.repeat, args.v6)
    cyc = measure_cycles(10000, args.duration) if args.cycles else None
    if args.json:
        print(json.dumps({"commits": rows, "cycles": cyc}, indent=2))
        return 0
    print(f"{'shape':<7} {'rules':>7} {'v4/v6':>13} {'acl':>6} {'pycomp':>8} {'marshal':>8} "
          f"{'compile':>8} {'publish':>8} {'total':>8} {'cpu':>8} {'lost':>5}  target "
          "(compile+publish: wall / cpu)")
    for r in rows:
        verdict = (f"{r['verdict']} / {r['cpu_verdict']} <= {r['target_s'] * 1000:.0f} ms"
                   if "verdict" in r else "")
        pyc = f"{r['pycompile_s'] * 1e3:6.1f}ms" if r["pycompile_s"] is not None else "       -"
        print(f"{r['shape']:<7} {r['rules']:>7} {r['acl_rules4']:>6}/{r['acl_rules6']:<6} "
              f"{r['acl_merged']:>6} {pyc} {r['marshal_s'] * 1e3:>6.1f}ms "
              f"{r['compile_s'] * 1e3:>6.1f}ms {r['publish_s'] * 1e3:>6.2f}ms "
              f"{r['total_s'] * 1e3:>6.1f}ms {r['commit_cpu_s'] * 1e3:>6.1f}ms {r['lost']:>5}  "
              f"{verdict}")
    if rows:
        print(f"traffic during the commits: balanced={rows[0]['traffic_balanced']}, "
              f"not forwarded={rows[0]['traffic_not_forwarded']}")
    if cyc:
        a, b = cyc["parse_forward"], cyc["parse_policy_forward"]
        print(f"\ncycles/packet (on-CPU), {cyc['rules']} rules: parse+forward "
              f"{a['cpu_cycles_per_packet']:.0f}, parse+policy+forward "
              f"{b['cpu_cycles_per_packet']:.0f}: the policy stage adds "
              f"{cyc['policy_cycles_per_packet']:.0f} (drops: {b['drops'] or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
