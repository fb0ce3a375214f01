"""The policy stage: compiled AclRules through parse -> policy -> forward on net_ring ports.

Each packet carries an id; a table of (packet, expected verdict, rule id)
is run at once, and the test compares what came out, the drop reasons and
the per-rule-id counters with the table. The RCU test swaps two policies
100 times under template-source traffic and accounts for every packet.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from test_stages import arp, eth, pid, run, tag

from pydp import ConfigError, Dataplane, InvalidArgument, NotSupported, Pipeline, Source, Vary, acl
from pydp.acl import AclRule, CompiledPolicy
from pydp.stages import STAGE_TYPES, Count, Forward, Parse, Policy

SRC4 = "198.51.100.1"
SRC6 = "2001:db8::1"


def fw(rules: list | None = None, n_ids: int | None = None, default_allow: bool = False,
       other: bool = False, commit: bool = True) -> Pipeline:
    """parse -> policy -> forward(out); non-IP to port 'other' when ``other``."""
    pol = Policy("pol", next="fwd", other="f_other" if other else None)
    if commit:
        pol.use(rules or [], n_ids, default_allow)
    stages = [Parse("parse", next="pol"), pol, Forward("fwd", port="out", keep_src_mac=True)]
    ports = ["in", "out"]
    if other:
        stages.append(Forward("f_other", port="other", keep_src_mac=True))
        ports.append("other")
    return Pipeline("fw", ports=ports, inputs={"in": "parse"}, stages=stages)


def u4(i: int, dst: str, dport: int = 53, sport: int = 1000, src: str = SRC4, **ip: Any) -> Ether:
    return eth() / IP(src=src, dst=dst, **ip) / UDP(sport=sport, dport=dport) / tag(i)


def t4(i: int, dst: str, dport: int, sport: int = 1000, src: str = SRC4, **ip: Any) -> Ether:
    return eth() / IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport) / tag(i)


def t6(i: int, dst: str, dport: int, src: str = SRC6, ext: Any = None) -> Ether:
    l3 = IPv6(src=src, dst=dst)
    if ext is not None:
        l3 = l3 / ext
    return eth() / l3 / TCP(sport=2000, dport=dport) / tag(i)


class Counters:
    """Reads the per-rule counters from inside run()'s ``then`` hook, before the stop."""

    def __init__(self, n_ids: int) -> None:
        self.n_ids = n_ids
        self.pkts: np.ndarray | None = None
        self.bytes: np.ndarray | None = None
        self.info: dict[str, int] = {}

    def __call__(self, dp: Dataplane) -> list:
        self.pkts, self.bytes = acl.counters(dp, "pol", self.n_ids)
        self.info = acl.info(dp, "pol")
        return []


def check_table(table: list[tuple[Ether, str, int | None]], rules: list[AclRule],
                ring_name: Any, n_ids: int, **kw: Any) -> Any:
    """Run ``table`` (packet, 'allow' | drop reason, rule id) and check every verdict."""
    pkts = [p for p, _, _ in table]
    ctr = Counters(n_ids)
    r = run(fw(rules, n_ids, **kw), ring_name, {"in": pkts}, then=ctr)
    got = set(r.ids("out"))
    wrong = [(pid(p), p.summary(), want) for p, want, _ in table
             if (pid(p) in got) != (want == "allow")]
    assert not wrong, "wrong verdicts (id, packet, wanted):\n" + "\n".join(map(str, wrong))
    want_drops = {}
    for _, want, _ in table:
        if want != "allow":
            want_drops[f"pol/{want}"] = want_drops.get(f"pol/{want}", 0) + 1
    assert r.st.drops() == want_drops
    want_pkts = np.zeros(n_ids, dtype=np.uint64)
    want_bytes = np.zeros(n_ids, dtype=np.uint64)
    for p, _, rid in table:
        if rid is not None:
            want_pkts[rid] += 1
            want_bytes[rid] += len(bytes(p))
    assert ctr.pkts.tolist() == want_pkts.tolist()
    assert ctr.bytes.tolist() == want_bytes.tolist()
    return r, ctr


# -- matching ----------------------------------------------------------------------------
RULES = [
    AclRule(0, action="allow", dst="10.1.0.0/16", proto=17, dport=53),
    AclRule(1, action="allow", dst="10.2.0.0/24", proto=6, dport=(8000, 8080)),
    AclRule(2, action="allow", src="192.0.2.0/28"),
    AclRule(3, action="deny", dst="10.1.99.0/24", proto=17, priority=10),
    AclRule(4, action="allow", dst="10.3.0.1/32", proto=6, sport=(1000, 1999)),
    AclRule(5, action="allow", dst="fd00:1::/32", proto=6, dport=443),
    AclRule(6, action="deny", src="fd00:bad::/32", priority=5),
    AclRule(7, action="allow", dst="10.4.0.0/16", proto=1),
    AclRule(8, action="allow", proto=17, dport=7),  # no address: IPv4 and IPv6
]


def match_table() -> list[tuple[Ether, str, int | None]]:
    opt = [IPOption(b"\x01\x01\x00\x35")]  # read at offset 20 as ports, dport would be 53
    rows = [
        (u4(0, "10.1.2.3", 53), "allow", 0),
        (u4(1, "10.1.2.3", 54), "default-deny", None),
        (t4(2, "10.1.2.3", 53), "default-deny", None),            # proto
        (t4(3, "10.2.0.5", 8000), "allow", 1),
        (t4(4, "10.2.0.5", 8080), "allow", 1),
        (t4(5, "10.2.0.5", 7999), "default-deny", None),
        (t4(6, "10.2.0.5", 8081), "default-deny", None),
        (t4(7, "10.2.1.5", 8000), "default-deny", None),          # prefix
        (u4(8, "10.9.9.9", 1, src="192.0.2.5"), "allow", 2),
        (u4(9, "10.9.9.9", 1, src="192.0.2.16"), "default-deny", None),
        (u4(10, "10.1.99.1", 53), "policy-deny", 3),              # deny outranks rule 0
        (t4(11, "10.3.0.1", 22, sport=1500), "allow", 4),
        (t4(12, "10.3.0.1", 22, sport=999), "default-deny", None),
        (t4(13, "10.3.0.2", 22, sport=1500), "default-deny", None),
        (eth() / IP(src=SRC4, dst="10.4.1.1") / ICMP() / tag(14), "allow", 7),
        (eth() / IP(src=SRC4, dst="10.5.1.1") / ICMP() / tag(15), "default-deny", None),
        (u4(16, "10.7.7.7", 7), "allow", 8),
        (eth() / IPv6(src=SRC6, dst="fd00:7::1") / UDP(dport=7) / tag(17), "allow", 8),
        (t6(18, "fd00:1:2::3", 443), "allow", 5),
        (t6(19, "fd00:1:2::3", 444), "default-deny", None),
        (t6(20, "fd00:2::1", 443), "default-deny", None),
        (t6(21, "fd00:1::1", 443, src="fd00:bad::1"), "policy-deny", 6),
        # IPv6 extension headers: ports come from the real L4 header
        (t6(22, "fd00:1::1", 443, ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()), "allow", 5),
        (t6(23, "fd00:1::1", 444, ext=IPv6ExtHdrDestOpt()), "default-deny", None),
        # IPv4 options: the L4 header starts at 24, not 20
        (u4(24, "10.1.2.3", 53, options=opt), "allow", 0),
        (u4(25, "10.1.2.3", 54, options=opt), "default-deny", None),
        # fragments: a first fragment has ports, a later one has ports 0
        (u4(26, "10.1.2.3", 53, flags="MF"), "allow", 0),
        (eth() / IP(src=SRC4, dst="10.1.2.3", frag=10, proto=17) / tag(27), "default-deny",
         None),
        (eth() / IP(src="192.0.2.1", dst="10.1.2.3", frag=10, proto=17) / tag(28), "allow", 2),
        (eth() / IPv6(src=SRC6, dst="fd00:1::1") / IPv6ExtHdrFragment(offset=8, nh=6)
         / tag(29), "default-deny", None),
    ]
    for i, (p, _, _) in enumerate(rows):
        assert pid(p) == i
    return rows


def test_match_proto_ports_prefixes(ring_name):
    """Allow/deny by protocol, port ranges and prefixes, IPv4 and IPv6, options,
    extension headers and fragments; per-rule packet and byte counters."""
    check_table(match_table(), RULES, ring_name, n_ids=9)


@pytest.mark.parametrize("order", ["given", "reversed"])
def test_deny_precedence_by_priority(ring_name, order):
    """The higher priority wins whatever the list order; an allow above a deny is an
    exception; on a priority tie deny wins."""
    rules = [AclRule(0, action="allow", dst="10.0.0.0/8"),
             AclRule(1, action="deny", dst="10.1.0.0/16", priority=10),
             AclRule(2, action="allow", dst="10.1.2.0/24", proto=6, dport=22, priority=20),
             AclRule(3, action="allow", dst="10.5.0.0/16", priority=5),
             AclRule(4, action="deny", dst="10.5.0.0/16", proto=17, priority=5)]
    if order == "reversed":
        rules = rules[::-1]
    table = [(u4(0, "10.9.0.1"), "allow", 0),
             (u4(1, "10.1.9.9"), "policy-deny", 1),
             (t4(2, "10.1.2.3", 22), "allow", 2),
             (t4(3, "10.1.2.3", 23), "policy-deny", 1),
             (u4(4, "10.5.1.1"), "policy-deny", 4),
             (t4(5, "10.5.1.1", 80), "allow", 3),
             (u4(6, "11.0.0.1"), "default-deny", None)]
    check_table(table, rules, ring_name, n_ids=5)


def test_default_allow_and_non_ip_on_other(ring_name):
    """default_allow passes what no rule matched (counted); ARP and other non-IP
    frames take the 'other' edge, never the ACL."""
    rules = [AclRule(0, action="deny", dst="10.6.0.0/16")]
    table = [(u4(0, "10.6.1.1"), "policy-deny", 0),
             (u4(1, "10.7.1.1"), "allow", None),
             (t6(2, "fd00::1", 80), "allow", None)]
    pkts = [p for p, _, _ in table] + [arp(3), eth(type=0x88B5) / tag(4)]
    r = run(fw(rules, default_allow=True, other=True), ring_name, {"in": pkts})
    assert sorted(r.ids("out")) == [1, 2]
    assert r.ids("other") == [3, 4]
    assert r.st.drops() == {"pol/policy-deny": 1}
    assert r.stage("pol")["default-allow"] == 2
    assert r.stage("pol")["stateful"] == 0


def test_no_policy_denies_ip_and_passes_arp_to_next(ring_name):
    """Zero trust before any rule: IP is default-deny; 'other' unlinked means next."""
    pkts = [u4(0, "10.0.0.1"), t6(1, "fd00::1", 80), arp(2)]
    r = run(fw(commit=False), ring_name, {"in": pkts})
    assert r.ids("out") == [2]
    assert r.st.drops() == {"pol/default-deny": 2}


def test_shared_ids_and_generations(ring_name):
    """AclRules sharing an id count together; a commit starts new counters."""
    rules = [AclRule(0, action="allow", dst="10.0.0.0/24"),
             AclRule(0, action="allow", dst="fd00::/64"),
             AclRule(1, action="allow", dport=(80, 80), proto=6)]  # both families
    pkts = [u4(0, "10.0.0.1"), t6(1, "fd00::2", 9), t6(2, "fd01::2", 80), t4(3, "11.0.0.1", 80)]
    seen: dict[str, Any] = {}

    def then(dp: Dataplane) -> list:
        seen["first"] = acl.counters(dp, "pol", 3)  # one more id than the table has
        seen["gen1"] = acl.info(dp, "pol")
        acl.commit(dp, "pol", rules, 2)
        seen["after"] = acl.counters(dp, "pol", 2)
        seen["gen2"] = acl.info(dp, "pol")
        return [("in", [u4(4, "10.0.0.9")])]

    r = run(fw(rules, 2), ring_name, {"in": pkts}, then=then)
    assert sorted(r.ids("out")) == [0, 1, 2, 3, 4]
    pk, by = seen["first"]
    assert pk.tolist() == [2, 2, 0]
    assert by.tolist() == [len(bytes(pkts[0])) + len(bytes(pkts[1])),
                           len(bytes(pkts[2])) + len(bytes(pkts[3])), 0]
    assert seen["after"][0].tolist() == [0, 0]
    assert (seen["gen1"]["generation"], seen["gen2"]["generation"]) == (1, 2)
    assert (seen["gen2"]["n_rules4"], seen["gen2"]["n_rules6"]) == (2, 2)


def test_commit_1k_rules(ring_name):
    """1000 rules (cross products of address groups, as pydp.policy emits) compile and
    publish into a running pipeline; the verdicts follow. benchmarks/policy_apply.py
    measures 10k and 100k."""
    import ipaddress
    import random

    rnd = random.Random(7)
    groups = [[ipaddress.ip_network((10 << 24 | rnd.getrandbits(16) << 8, 24)),
               ipaddress.ip_network((10 << 24 | rnd.getrandbits(24), 32))] for _ in range(40)]
    rules = []
    while len(rules) < 996:
        rid = len(rules) // 4
        a, b = rnd.choice(groups), rnd.choice(groups)
        rules += [AclRule(rid, 10, 4, 6, s, d, None, (p, p), "allow")
                  for s in a for d in b[:1] for p in (443, 8443)]
    rules += [AclRule(249, 20, dst="10.255.0.0/16", action="deny"),
              AclRule(250, 30, src="192.0.2.0/24", dst="10.255.1.1", proto=17, dport=53,
                      action="allow")]
    g = rules[0]
    took: list[float] = []

    def then(dp: Dataplane) -> Any:
        took.append(acl.commit(dp, "pol", rules))
        yield ("in", [u4(1, "10.255.1.1", src="192.0.2.7"), u4(2, "10.255.2.2"),
                      u4(3, "10.254.1.1"),
                      t4(4, str(g.dst.network_address), 443, src=str(g.src.network_address))])

    r = run(fw([]), ring_name, {"in": [u4(0, "10.255.1.1", src="192.0.2.7")]}, then=then)
    print(f"commit of {len(rules)} rules: {took[0] * 1000:.1f} ms")
    assert sorted(r.ids("out")) == [1, 4]  # 0 came before the commit: default deny
    assert r.st.drops() == {"pol/default-deny": 2, "pol/policy-deny": 1}
    assert took[0] < 1.0  # ~20-40 ms here; a generous bound for a shared machine


# -- bad rules -----------------------------------------------------------------------------
def _arr(rule: AclRule, **fields: int) -> np.ndarray:
    a = acl.rules_array([rule])
    for k, v in fields.items():
        a[k] = v
    return a


BAD = [  # (rules or array, n_ids, what the message must name)
    ([AclRule(0, action="allow"), AclRule(7, action="allow", dport=(90, 80))], 8, "rule 7: dport"),
    ([AclRule(3, action="deny", proto=6, sport=(10, 1))], 8, "rule 3: sport"),
    ([AclRule(12, action="allow", dst="10.0.0.0/8")], 5, "rule 12: id"),
    ([AclRule(4, action="deny", priority=acl.MAX_PRIORITY + 1)], 8, "rule 4: priority"),
    (_arr(AclRule(5, action="allow", dst="10.0.0.0/8"), family=5), 8, "rule 5: family"),
    (_arr(AclRule(6, action="allow", dst="10.0.0.0/8"), src_depth=33), 8, "rule 6: src_depth"),
    (_arr(AclRule(2, action="allow", dst="fd00::/8"), dst_depth=129), 8, "rule 2: dst_depth"),
    (_arr(AclRule(1, action="allow", dst="10.0.0.0/8"), action=2), 8, "rule 1: action"),
]


def test_bad_rule_rejected_old_policy_stays(ring_name):
    """Each bad rule is refused with its id and field named; the running policy is
    untouched (same generation, same verdicts, counters still going)."""
    good = [AclRule(0, action="allow", dst="10.0.0.0/8", proto=17, dport=53)]
    errors: list[str] = []
    gens: list[int] = []

    def then(dp: Dataplane) -> list:
        for rules, n_ids, _ in BAD:
            with pytest.raises(InvalidArgument) as e:
                acl.commit(dp, "pol", rules, n_ids)
            errors.append(str(e.value))
            gens.append(acl.info(dp, "pol")["generation"])
        return [("in", [u4(2, "10.1.1.1"), u4(3, "10.1.1.1", 54)])]

    r = run(fw(good), ring_name, {"in": [u4(0, "10.1.1.1"), u4(1, "11.1.1.1")]}, then=then)
    for (_, _, want), msg in zip(BAD, errors):
        assert want in msg, msg
        assert "stage 'pol'" in msg
    assert gens == [1] * len(BAD)
    assert sorted(r.ids("out")) == [0, 2]
    assert r.st.drops() == {"pol/default-deny": 2}


@pytest.mark.parametrize("kw, want", [
    ({"id": 1, "action": "permit"}, "acl rule 1: action"),
    ({"id": 2, "action": "allow", "dport": 70000}, "acl rule 2: dport"),
    ({"id": 3, "action": "allow", "sport": (1, 2, 3)}, "acl rule 3: sport"),
    ({"id": 4, "action": "allow", "src": "10.0.0.0/8", "dst": "fd00::/8"}, "acl rule 4: dst"),
    ({"id": 5, "action": "allow", "src": "10.0.0.300/8"}, "acl rule 5: src"),
    ({"id": 6, "action": "deny", "proto": 256}, "acl rule 6: proto"),
    ({"id": 7, "action": "deny", "family": 6, "dst": "10.0.0.0/8"}, "acl rule 7: family"),
])
def test_acl_rule_checks(eal, kw, want):
    with pytest.raises(InvalidArgument, match=want):
        AclRule(**kw)


def test_acl_rule_positional_order():
    """Positional fields follow struct pd_acl_rule (what pydp.policy's compiler builds)."""
    import ipaddress
    r = AclRule(3, 7, 4, 6, ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("0.0.0.0/0"), (0, 65535), (80, 80), "allow")
    assert (r.id, r.priority, r.family, r.proto, r.dport, r.action) == (3, 7, 4, 6, (80, 80),
                                                                          "allow")
    assert AclRule(1).action == "deny"  # fail closed


def test_acl_rule_families():
    assert AclRule(0, action="allow").families() == (4, 6)
    assert AclRule(0, action="allow", dst="fd00::/8").families() == (6,)
    assert AclRule(0, action="allow", family=4).families() == (4,)
    a = acl.rules_array([AclRule(9, action="deny", src="10.1.2.3/16", dport=80, proto=6)])
    assert a.dtype.itemsize == acl.ffi.sizeof("struct pd_acl_rule")
    assert (a["src_depth"][0], bytes(a["src"][0][:4]), a["dport_lo"][0], a["dport_hi"][0],
            a["sport_lo"][0], a["sport_hi"][0], a["action"][0]) == \
        (16, bytes([10, 1, 0, 0]), 80, 80, 0, 65535, 0)


# -- configuration ---------------------------------------------------------------------------
def test_policy_yaml_and_loader(ring_name):
    """A policy file goes through the installed loader; the stage round-trips as YAML."""
    text = """
name: fw
ports: [in, out]
stages:
  - {name: parse, type: parse, next: pol}
  - {name: pol, type: policy, next: fwd, policy: my-policy.yaml}
  - {name: fwd, type: forward, port: out, keep_src_mac: true}
"""
    pl = Pipeline.loads(text)
    assert Pipeline.loads(pl.to_yaml()) == pl
    asked: list[str] = []

    def loader(path: str) -> CompiledPolicy:
        asked.append(path)
        return CompiledPolicy([AclRule(0, action="allow", dst="10.0.0.0/8")])

    previous = acl._loader
    acl.set_policy_loader(loader)
    try:
        r = run(pl, ring_name, {"in": [u4(0, "10.0.0.1"), u4(1, "11.0.0.1")]})
    finally:
        acl.set_policy_loader(previous)
    assert asked == ["my-policy.yaml"]
    assert r.ids("out") == [0]


def test_policy_conntrack_validation(eal):
    with pytest.raises(ConfigError, match="conntrack: no stage named 'ct'"):
        Pipeline("x", ports=["in", "out"], stages=[
            Parse("parse", next="pol"), Policy("pol", next="f", conntrack="ct"),
            Forward("f", port="out")])
    with pytest.raises(ConfigError, match="'cnt' is a count, not a conntrack stage"):
        Pipeline("x", ports=["in", "out"], stages=[
            Parse("parse", next="cnt"), Count("cnt", next="pol"),
            Policy("pol", next="f", conntrack="cnt"), Forward("f", port="out")])


def test_policy_conntrack_link_checks(ring_name):
    """Without conntrack.c linked in, asking for the link is NotSupported, not a crash;
    with it, the linked stage must be a conntrack stage before the policy."""
    from pydp._core import check, lib

    with Dataplane(fw([]), ports={"in": ring_name(), "out": ring_name()}) as dp:
        pol = dp.stage_index["pol"]
        if not lib.pd_stage_type_known(b"conntrack"):
            with pytest.raises(NotSupported, match="no conntrack"):
                check(lib.pd_policy_config(dp._cp, pol, 0))
        else:
            with pytest.raises(InvalidArgument, match="'parse' is a parse, not a conntrack"):
                check(lib.pd_policy_config(dp._cp, pol, dp.stage_index["parse"]))
            with pytest.raises(InvalidArgument, match="must come before it"):
                check(lib.pd_policy_config(dp._cp, pol, dp.stage_index["fwd"]))
        assert acl.info(dp, "pol")["conntrack_stage"] == -1


# -- stateful: behind a conntrack stage in confirm mode ---------------------------------------
needs_conntrack = pytest.mark.skipif("conntrack" not in STAGE_TYPES,
                                     reason="no conntrack stage in this build")


def stateful(capacity: int = 2, mode: str = "confirm") -> Pipeline:
    rules = [AclRule(0, action="allow", src="10.0.0.0/24", dst="10.1.0.1/32", proto=6,
                     dport=80)]
    return Pipeline("sfw", ports=["in", "out"], inputs={"in": "parse"}, stages=[
        Parse("parse", next="ct"),
        STAGE_TYPES["conntrack"]("ct", next="pol", capacity=capacity, mode=mode),
        Policy("pol", next="fwd", conntrack="ct").use(rules, 1),
        Forward("fwd", port="out", keep_src_mac=True)])


@needs_conntrack
def test_stateful_replies_pass_and_full_table_drops(ring_name):
    """Allowed first packets create flows; their replies pass without the ACL (which
    would deny them); a new allowed flow beyond capacity is flow-table-full."""
    srv = "10.1.0.1"
    first = [t4(0, srv, 80, src="10.0.0.1"), t4(1, srv, 80, src="10.0.0.2"),
             t4(2, srv, 80, src="10.9.9.9")]
    later = [eth() / IP(src=srv, dst="10.0.0.1") / TCP(sport=80, dport=1000) / tag(3),
             t4(4, srv, 80, src="10.0.0.1"),
             t4(5, srv, 80, src="10.0.0.3"),
             eth() / IP(src=srv, dst="10.9.9.9") / TCP(sport=80, dport=1000) / tag(6)]
    ctr = Counters(1)

    def then(dp: Dataplane) -> Any:
        assert acl.info(dp, "pol")["conntrack_stage"] == dp.stage_index["ct"]
        yield ("in", later)  # a later burst: the first packets' flows exist by now
        ctr(dp)              # run() resumes us once `later` has settled

    r = run(stateful(), ring_name, {"in": first}, then=then)
    assert sorted(r.ids("out")) == [0, 1, 3, 4]
    assert r.st.drops() == {"pol/default-deny": 2, "pol/flow-table-full": 1}
    assert r.stage("pol")["stateful"] == 2
    assert ctr.pkts.tolist() == [3]  # 0, 1 and 5 matched the rule; 3, 4 never met the ACL


def test_policy_conntrack_modes(eal):
    if "conntrack" not in STAGE_TYPES:
        pytest.skip("no conntrack stage in this build")
    with pytest.raises(ConfigError, match="must run in mode confirm"):
        stateful(mode="auto")
    ct = STAGE_TYPES["conntrack"]
    with pytest.raises(ConfigError, match="from port 'in2' can reach it without passing 'ct'"):
        Pipeline("x", ports=["in", "in2", "out"], inputs={"in": "parse", "in2": "parse2"},
                 stages=[Parse("parse", next="ct"), Parse("parse2", next="pol"),
                         ct("ct", next="pol", mode="confirm"),
                         Policy("pol", next="f", conntrack="ct"), Forward("f", port="out")])


# -- RCU: swapping policies under traffic ------------------------------------------------------
def test_rcu_swap_under_traffic(ring_name):
    """100 commits alternate two policies while the template source sends at a bounded
    rate. The policies differ only for sources 10.0.0.128/25; flows from 10.0.0.0/25
    must all pass, flows to 10.9.0.1 are always default-deny, and every packet has
    exactly one verdict."""
    n = 2 * 256 * 20  # two templates, 20 rounds of 256 source addresses each
    keep = [AclRule(0, action="allow", src="10.0.0.0/24", dst="10.1.0.0/16", proto=17)]
    a = keep
    b = keep + [AclRule(1, action="deny", src="10.0.0.128/25", priority=10)]
    src = Source([Ether() / IP(src="10.0.0.0", dst="10.1.0.1") / UDP(sport=5, dport=80),
                  Ether() / IP(src="10.0.0.1", dst="10.9.0.1") / UDP(sport=5, dport=80)],
                 vary=[Vary("IP.src", "10.0.0.0", "10.0.0.255", template=0)],
                 rate_pps=10000, count=n)
    pl = fw(a, n_ids=2)
    out: list = []
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}, sources={"in": src}) as dp:
        dp.start()
        took = []
        for i in range(100):
            took.append(acl.commit(dp, "pol", b if i % 2 == 0 else a, 2))
            out += dp.port("out").capture(count=None, timeout=0, idle=0, raw=True)
            time.sleep(0.006)
        deadline = time.monotonic() + 10
        while not dp.sources_done() and time.monotonic() < deadline:
            out += dp.port("out").capture(count=None, timeout=0, idle=0, raw=True)
            time.sleep(0.01)
        assert dp.sources_done()
        assert acl.info(dp, "pol")["generation"] == 101
        dp.stop()
        st = dp.stats()
        out += dp.port("out").capture(count=dp.port("out").pending(), raw=True)
        assert dp.pool.in_use() == 0
    assert st.rx == n
    assert st.rx == st.tx + st.dropped and st.balanced(), st.summary()
    drops = st.drops()
    assert set(drops) <= {"pol/policy-deny", "pol/default-deny"}, drops
    assert drops["pol/default-deny"] == n // 2  # template 1: no rule allows it
    denied = drops.get("pol/policy-deny", 0)
    assert 0 < denied < n // 4, drops  # policy b was in force for part of the run only
    low = sum(1 for p in out if p[14 + 15] < 128)  # last byte of the IPv4 source
    high = len(out) - low
    assert len(out) == st.tx
    assert low == n // 4  # allowed by both policies: never lost across a swap
    assert high == n // 4 - denied
    assert max(took) < 0.5, max(took)
