"""An identity-based policy as a service mesh would produce it, for the policy benchmarks.

``gen_mesh(n)`` returns a :class:`pydp.policy.model.Policy` whose compiled form
(:func:`pydp.policy.compile_policy`: the cross product of every rule's source
prefixes, destination prefixes and port entries) has about ``n`` ACL rules:

* **workload identities**: ``n / 25`` (at least 24) label sets
  ``{app, ns, tier}`` (16 namespaces at most, tiers web/api/db/cache), each with
  1-8 pods. A pod is a /32 from the pod CIDR of the node it runs on (a /24 per
  node, ``10.64.0.0/10``), so the pods of one identity are scattered over the
  nodes, never one prefix. ``v6`` of the identities are dual-stack: each pod
  also has a /128 in its node's ``fd00:0:0:NODE::/64``.
* **external identities**: one in twenty, ``{ext: partnerK}``, 1-3 CIDRs
  (/16-/24) in 100.64.0.0/10, with a /28 carved out of one (an ipBlock
  ``except``) for some.
* **rules**, drawn until the compiled size reaches ``n`` (a rule that would
  expand to more than 2 % of ``n`` is drawn again, so the set has many rules):
  45 % app -> app (``{app: a}`` to ``{app: b}``), 20 % tier -> tier inside a
  namespace (``{ns, tier: web}`` to ``{ns, tier: api}``), 10 % namespace ->
  app, 10 % external -> web tier, 10 % deny namespace -> db tier of another
  namespace (all ports), 5 % ``cidr``-with-``except`` -> app. Port entries:
  1-3 per rule, tcp or udp, a common service port (80, 443, 8080, 5432, 6379,
  9090, 53, 22, 8443, 3000) or, one in five, a range of 2-200 ports.
* **benchmark traffic**: identity ``loadgen`` (``172.16.0.0/16``, the sources of
  :func:`pydp.bench.bench_flows`) may reach ``bench-svc`` (``10.0.2.0/24``) on
  udp/5001, so the benchmark's packets are allowed by one rule among the
  others (``allow_share`` < 1 narrows loadgen to that share of the flows, for
  a mix of allowed and denied packets).
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

PORTS = (80, 443, 8080, 5432, 6379, 9090, 53, 22, 8443, 3000)
TIERS = ("web", "api", "db", "cache")


def _ports(rnd: random.Random) -> list[str]:
    out = []
    for _ in range(rnd.randint(1, 3)):
        p = rnd.choice(PORTS)
        proto = rnd.choice(("tcp", "udp"))
        out.append(f"{proto}/{p}-{p + rnd.randint(1, 199)}" if rnd.random() < 0.2
                   else f"{proto}/{p}")
    return out


def loadgen_prefixes(flows: int, allow_share: float) -> list[str]:
    """Prefixes covering the first ``allow_share`` of the benchmark sources 172.16.0.1 + i."""
    if allow_share >= 1:
        return ["172.16.0.0/16"]
    n = max(1, int(flows * allow_share))
    lo = int(ipaddress.IPv4Address("172.16.0.1"))
    nets = ipaddress.summarize_address_range(ipaddress.IPv4Address(lo),
                                             ipaddress.IPv4Address(lo + n - 1))
    return [str(x) for x in nets]


def gen_mesh(n: int, v6: float = 0.2, seed: int = 1, allow_share: float = 1.0,
             flows: int = 10000) -> Any:
    """A mesh policy compiling to about ``n`` ACL rules (see the module docstring)."""
    from pydp.policy.model import Identity, Policy, Rule, Selector

    rnd = random.Random(seed)
    n_id = max(24, n // 25)
    n_ns = min(16, max(2, n_id // 12))
    n_nodes = max(8, n_id // 3)
    idents: list[Any] = []
    apps: list[str] = []
    for i in range(n_id):
        pods4, pods6 = [], []
        dual = rnd.random() < v6
        for _ in range(rnd.randint(1, 8)):
            node = rnd.randrange(n_nodes)
            host = rnd.randrange(2, 254)
            pods4.append(str(ipaddress.IPv4Address((10 << 24 | 64 << 16) + (node << 8) + host)))
            if dual:
                pods6.append(f"fd00::{node:x}:0:0:{host:x}")
        apps.append(f"a{i}")
        idents.append(Identity(f"w{i}", {"app": f"a{i}", "ns": f"ns{i % n_ns}",
                                          "tier": TIERS[i % 4]}, sorted(set(pods4)) + pods6))
    n_ext = max(2, n_id // 20)
    for k in range(n_ext):
        nets = set()
        for _ in range(rnd.randint(1, 3)):
            d = rnd.randint(16, 24)
            nets.add(str(ipaddress.ip_network((100 << 24 | 64 << 16 | rnd.getrandbits(14) << 8,
                                               d), strict=False)))
        idents.append(Identity(f"ext{k}", {"ext": f"partner{k}"}, sorted(nets)))
    idents.append(Identity("loadgen", {"role": "loadgen"}, loadgen_prefixes(flows, allow_share)))
    idents.append(Identity("bench-svc", {"role": "bench-svc"}, ["10.0.2.0/24"]))
    probe = Policy(identities=idents)
    rules: list[Any] = []

    def size(src: Any, dst: Any, ports: list[str] | None) -> int:
        s4, s6 = probe.addresses(probe_sel(src))
        d4, d6 = probe.addresses(probe_sel(dst))
        return (len(s4) * len(d4) + len(s6) * len(d6)) * (len(ports) if ports else 1)

    def probe_sel(sel: Any) -> Any:
        return Selector.parse(sel)

    total = 0
    rules.append(Rule("loadgen-to-bench", "allow", src={"role": "loadgen"},
                      dst={"role": "bench-svc"}, ports=["udp/5001"]))
    total += 1
    i = 0
    while total < n:
        x = rnd.random()
        ns, ns2 = f"ns{rnd.randrange(n_ns)}", f"ns{rnd.randrange(n_ns)}"
        ports: list[str] | None = _ports(rnd)
        act = "allow"
        if x < 0.45:
            src, dst = {"app": rnd.choice(apps)}, {"app": rnd.choice(apps)}
        elif x < 0.65:
            t = rnd.randrange(3)
            src, dst = {"ns": ns, "tier": TIERS[t]}, {"ns": ns, "tier": TIERS[t + 1]}
        elif x < 0.75:
            src, dst = {"ns": ns}, {"app": rnd.choice(apps)}
        elif x < 0.85:
            src, dst = {"ext": f"partner{rnd.randrange(n_ext)}"}, {"ns": ns, "tier": "web"}
        elif x < 0.95:
            src, dst, ports, act = {"ns": ns}, {"ns": ns2, "tier": "db"}, None, "deny"
        else:
            base = ipaddress.ip_network((100 << 24 | 64 << 16 | rnd.getrandbits(6) << 16, 16))
            hole = ipaddress.ip_network((int(base.network_address) | rnd.getrandbits(12) << 4,
                                         28))
            src = {"cidr": [str(base)], "except": [str(hole)]}
            dst = {"app": rnd.choice(apps)}
        k = size(src, dst, ports)
        if k == 0:
            continue
        if k > max(64, n // 50) or total + k > n * 1.02:
            continue  # one rule at most 2 % of the set, and stay near n: draw another
        rules.append(Rule(f"r{i}", act, src=src, dst=dst, ports=ports))
        total += k
        i += 1
    return Policy(identities=idents, rules=rules)
