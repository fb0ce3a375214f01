"""The class lookup of the policy stage against a reference, on nested prefixes.

policy.c numbers the policy's prefixes (pre-order over the prefix tree),
maps each packet address to the class of its most specific prefix with
rte_lpm / rte_lpm6, merges rules that differ only in adjacent class intervals
and matches class ranges in rte_acl; IPv4 rules that do not merge stay in
address form. These tests draw rule sets full of nested prefixes (/8 > /16 >
/24 > /32, and IPv6 alike), deny and allow at several priorities, port
ranges, send packets at and around every prefix, and compare each packet's
fate and each rule id's hit count with a plain Python evaluation of the
rules (highest priority wins, deny wins a tie).
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from test_policy_stage import Counters, fw
from test_stages import eth, run, tag

from pydp.acl import AclRule


def _nets(rnd: random.Random, fam: int, n: int) -> list[Any]:
    """Chains of nested prefixes plus loose ones, all in one /8 (or /16 for IPv6)."""
    out = []
    if fam == 4:
        for _ in range(n):
            a = 10 << 24 | rnd.getrandbits(8) << 16 | rnd.getrandbits(8) << 8 | rnd.getrandbits(8)
            for d in rnd.sample((8, 16, 20, 24, 28, 32), rnd.randint(1, 3)):
                out.append(ipaddress.ip_network((a, d), strict=False))
    else:
        for _ in range(n):
            a = 0xFD00 << 112 | rnd.getrandbits(16) << 96 | rnd.getrandbits(16) << 64 \
                | rnd.getrandbits(8)
            for d in rnd.sample((16, 32, 48, 64, 120, 128), rnd.randint(1, 3)):
                out.append(ipaddress.ip_network((a, d), strict=False))
    return out


def ruleset(seed: int, cross: bool) -> list[AclRule]:
    """~300 rules; ``cross``: as cross products of groups (they merge into class form)."""
    rnd = random.Random(seed)
    rules: list[AclRule] = []
    # distinct priorities, as pydp.policy gives them: which id counts a hit is then
    # defined (equal priority and action: rte_acl picks either, see policy.h)
    prios = rnd.sample(range(1, 1000), 60)
    for fam in (4, 6):
        nets = _nets(rnd, fam, 30)
        groups = [rnd.sample(nets, rnd.randint(2, 5)) for _ in range(12)]
        for rid in range(40 if fam == 4 else 20):
            rid += 0 if fam == 4 else 40
            act = "deny" if rnd.random() < 0.3 else "allow"
            prio = prios[rid]
            proto = rnd.choice((6, 17, None))
            lo = rnd.choice((53, 80, 443, 1000))
            dport = None if proto is None else (lo, lo + rnd.choice((0, 0, 10, 500)))
            srcs = rnd.choice(groups) if cross else [rnd.choice(nets + [None])]
            dsts = rnd.choice(groups) if cross else [rnd.choice(nets + [None])]
            rules += [AclRule(rid, prio, fam, proto, s, d, None, dport, act)
                      for s in srcs for d in dsts]
    return rules


def reference(rules: list[AclRule], fam: int, src: Any, dst: Any, proto: int,
              dport: int) -> AclRule | None:
    best = None
    for r in rules:
        if r.family != fam or (r.proto is not None and r.proto != proto):
            continue
        if r.src is not None and src not in r.src or r.dst is not None and dst not in r.dst:
            continue
        if r.dport is not None and not r.dport[0] <= dport <= r.dport[1]:
            continue
        key = (r.priority, r.action == "deny")
        if best is None or key > (best.priority, best.action == "deny"):
            best = r
    return best


def packets(rules: list[AclRule], seed: int) -> list[tuple[Any, int, int, Any, Any]]:
    """(packet, proto, dport, src, dst) at the edges and inside of every prefix."""
    rnd = random.Random(seed)
    addrs: dict[int, list[Any]] = {4: [], 6: []}
    for r in rules:
        for n in (r.src, r.dst):
            if n is None:
                continue
            size = n.num_addresses
            for off in (0, size - 1, rnd.randrange(size), size):  # size: just past it
                addrs[n.version].append(n.network_address + off
                                        if int(n.network_address) + off < 2 ** n.max_prefixlen
                                        else n.network_address)
    addrs[4].append(ipaddress.ip_address("192.0.2.1"))
    addrs[6].append(ipaddress.ip_address("2001:db8::1"))
    out = []
    for i in range(600):
        fam = 4 if i % 3 else 6
        s, d = rnd.choice(addrs[fam]), rnd.choice(addrs[fam])
        proto = rnd.choice((6, 17))
        dport = rnd.choice((53, 80, 443, 1000, 1005, 1400, 1600, 9))
        l3 = IP(src=str(s), dst=str(d)) if fam == 4 else IPv6(src=str(s), dst=str(d))
        l4 = TCP(sport=4000, dport=dport) if proto == 6 else UDP(sport=4000, dport=dport)
        out.append((eth() / l3 / l4 / tag(i), proto, dport, s, d))
    return out


@pytest.mark.parametrize("cross", [True, False], ids=["class-form", "address-form"])
def test_verdicts_match_reference(ring_name, cross):
    rules = ruleset(11 if cross else 12, cross)
    pk = packets(rules, 5)
    n_ids = max(r.id for r in rules) + 1
    ctr = Counters(n_ids)

    def then(dp: Any) -> Any:
        ctr(dp)
        return []

    r = run(fw(rules, n_ids), ring_name, {"in": [p[0] for p in pk]}, then=then)
    want_out, want_hits = [], [0] * n_ids
    deny = default = 0
    for i, (_, proto, dport, s, d) in enumerate(pk):
        best = reference(rules, s.version, s, d, proto, dport)
        if best is None:
            default += 1
            continue
        want_hits[best.id] += 1
        if best.action == "allow":
            want_out.append(i)
        else:
            deny += 1
    assert sorted(r.ids("out")) == want_out
    assert r.st.drops() == {k: v for k, v in (("pol/policy-deny", deny),
                                              ("pol/default-deny", default)) if v}
    assert ctr.pkts.tolist() == want_hits
    # class form: the cross products merged; address form: IPv4 as it came
    info = ctr.info
    if cross:
        assert info["n_acl"] < len(rules) / 2, info
    else:
        assert info["n_acl"] >= info["n_rules4"], info


def test_compile_policy_array_matches_compile_policy():
    """The numpy compile (what stages and `pydp policy apply` commit) is row for row
    the AclRule compile packed by rules_array, padding included."""
    from pathlib import Path

    from pydp import acl
    from pydp.policy import compile_policy, compile_policy_array
    from pydp.policy.model import Policy

    shipped = Policy.load(Path(__file__).resolve().parent.parent / "pipelines" / "policies"
                          / "firewall.yaml")
    odd = Policy.loads("""\
identities:
  a: {labels: {x: "1"}, addresses: [10.0.0.0/24, 10.0.1.7, "fd00::/64"]}
  b: {labels: {x: "2"}, addresses: [10.1.0.1, 10.1.0.2, "fd00:1::1"]}
rules:
  - {name: r1, action: allow, from: {x: "1"}, to: {x: "2"},
     ports: [tcp/80, "udp/1000-2000", icmp, icmpv6]}
  - {name: r2, action: deny, from: {cidr: [0.0.0.0/0, "::/0"], except: [10.0.0.0/8]},
     to: any}
  - {name: r3, action: allow, from: any, to: {x: "1"}}
default: allow
""")
    empty = Policy.loads("rules: []\n")
    for pol in (shipped, odd, empty):
        rules, n_ids = compile_policy(pol)
        arr, n2 = compile_policy_array(pol)
        assert n2 == n_ids
        assert arr.dtype == acl.RULE_DTYPE
        assert arr.tobytes() == acl.rules_array(rules).tobytes()


def test_unchanged_family_is_not_rebuilt(ring_name):
    """A commit that changes only IPv6 rules shares the IPv4 context (and the reverse);
    an identical commit builds nothing; verdicts stay right either way."""
    v4 = [AclRule(0, 5, 4, 6, "10.0.0.0/24", "10.1.0.0/24", None, 80, "allow"),
          AclRule(0, 5, 4, 6, "10.0.5.0/24", "10.1.0.0/24", None, 80, "allow")]
    v6a = [AclRule(1, 4, 6, 6, "fd00::/64", "fd00:1::/64", None, 22, "allow")]
    v6b = [AclRule(1, 4, 6, 6, "fd00::/64", "fd00:1::/64", None, 2222, "allow")]
    seen: list[dict] = []

    def then(dp: Any) -> Any:
        from pydp import acl
        for rules in (v4 + v6b, v4 + v6b, v4[:1] + v6b):
            acl.commit(dp, "pol", rules, 2)
            seen.append(acl.info(dp, "pol"))
        yield ("in", [eth() / IP(src="10.0.0.9", dst="10.1.0.9") / TCP(dport=80) / tag(1),
                      eth() / IP(src="10.0.5.9", dst="10.1.0.9") / TCP(dport=80) / tag(2),
                      eth() / IPv6(src="fd00::9", dst="fd00:1::9") / TCP(dport=22) / tag(3),
                      eth() / IPv6(src="fd00::9", dst="fd00:1::9") / TCP(dport=2222) / tag(4)])

    r = run(fw(v4 + v6a, 2), ring_name, {"in": []}, then=then)
    assert [(i["acl_built"], i["acl_reused"]) for i in seen] == [(1, 1), (0, 2), (1, 1)]
    assert sorted(r.ids("out")) == [1, 4]
    assert r.st.drops() == {"pol/default-deny": 2}
