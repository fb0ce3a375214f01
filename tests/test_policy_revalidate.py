"""Revalidation: a commit that no longer allows an established flow cuts it.

parse -> conntrack (confirm) -> policy -> forward on net_ring ports. Two TCP
flows are opened and answered; then a commit drops the rule of one of them.
Its next packets, both directions, are dropped as ``revoked``; the other
flow, and its replies, go on. A later commit that allows it again lets it
pass again. Every packet carries an id; the capture, the drop reasons and the
flow tags are checked.
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from test_stages import eth, run, tag

from pydp import Dataplane, Pipeline, acl, flows
from pydp.acl import AclRule
from pydp.stages import STAGE_TYPES, Forward, Parse, Policy

pytestmark = pytest.mark.skipif("conntrack" not in STAGE_TYPES,
                                reason="no conntrack stage in this build")

TAG_REVOKED = 0xFFFFFFFE
CLI_A, SRV_A = "10.0.0.1", "10.1.0.1"   # flow A: tcp/80, rule 0
CLI_B, SRV_B = "10.0.0.2", "10.1.0.2"   # flow B: tcp/443, rule 1
RULE_A = AclRule(0, action="allow", src="10.0.0.0/24", dst=f"{SRV_A}/32", proto=6, dport=80)
RULE_B = AclRule(1, action="allow", src="10.0.0.0/24", dst=f"{SRV_B}/32", proto=6,
                 dport=443)


def pipeline() -> Pipeline:
    return Pipeline("rv", ports=["in", "out"], inputs={"in": "parse"}, stages=[
        Parse("parse", next="ct"),
        STAGE_TYPES["conntrack"]("ct", next="pol", capacity=16, mode="confirm"),
        Policy("pol", next="fwd", conntrack="ct").use([RULE_A, RULE_B], 2),
        Forward("fwd", port="out", keep_src_mac=True)])


def fwd(i: int, cli: str, srv: str, dport: int, flags: str = "A") -> Any:
    return eth() / IP(src=cli, dst=srv) / TCP(sport=1000, dport=dport, flags=flags) / tag(i)


def rep(i: int, cli: str, srv: str, dport: int, flags: str = "A") -> Any:
    return eth() / IP(src=srv, dst=cli) / TCP(sport=dport, dport=1000, flags=flags) / tag(i)


def tags(dp: Dataplane) -> dict[str, int]:
    recs = flows.flows(dp, "ct")
    return dict(zip(flows.addresses(recs, "src"), (int(t) for t in recs["tag"]), strict=True))


def test_commit_revokes_a_flow_it_no_longer_allows(ring_name):
    seen: dict[str, Any] = {}

    def then(dp: Dataplane) -> Any:
        # both flows answered: established, tagged with their rules
        yield ("in", [rep(2, CLI_A, SRV_A, 80, "SA"), rep(3, CLI_B, SRV_B, 443, "SA")])
        seen["before"] = tags(dp)
        # a policy without rule A (rule B unchanged, same id)
        acl.commit(dp, "pol", [RULE_B], 2)
        seen["info"] = acl.info(dp, "pol")
        seen["cut"] = tags(dp)
        yield ("in", [fwd(4, CLI_A, SRV_A, 80), rep(5, CLI_A, SRV_A, 80),
                      fwd(6, CLI_B, SRV_B, 443), rep(7, CLI_B, SRV_B, 443)])
        # a new connection A is denied as any new flow (no rule)
        yield ("in", [fwd(8, CLI_A, SRV_A, 81, "S")])
        # allowed again: the same flow passes again, both ways
        acl.commit(dp, "pol", [RULE_A, RULE_B], 2)
        seen["again"] = acl.info(dp, "pol")
        yield ("in", [fwd(9, CLI_A, SRV_A, 80), rep(10, CLI_A, SRV_A, 80)])

    r = run(pipeline(), ring_name, {"in": [fwd(0, CLI_A, SRV_A, 80, "S"),
                                           fwd(1, CLI_B, SRV_B, 443, "S")]}, then=then)
    assert seen["before"] == {CLI_A: 0, CLI_B: 1}
    assert seen["info"]["flows_revalidated"] == 2
    assert seen["info"]["flows_revoked"] == 1
    assert seen["cut"] == {CLI_A: TAG_REVOKED, CLI_B: 1}
    assert sorted(r.ids("out")) == [0, 1, 2, 3, 6, 7, 9, 10]
    assert r.st.drops() == {"pol/revoked": 2, "pol/default-deny": 1}
    assert seen["again"]["flows_revoked"] == 0
    assert seen["again"]["flows_revalidated"] == 2
    # replies of B and the revoked A packets never met the ACL: 2 stateful + 2 + 2
    assert r.stage("pol")["stateful"] == 6


def test_revalidation_moves_a_flow_to_the_rule_that_now_allows_it(ring_name):
    """A flow whose rule is replaced by another that still allows it keeps going, and
    its tag names the new rule."""
    seen: dict[str, Any] = {}
    wide = AclRule(1, action="allow", src="10.0.0.0/16", dst="10.1.0.0/16", proto=6)

    def then(dp: Dataplane) -> Any:
        acl.commit(dp, "pol", [wide], 2)
        seen["moved"] = tags(dp)
        seen["info"] = acl.info(dp, "pol")
        yield ("in", [fwd(2, CLI_A, SRV_A, 80), rep(3, CLI_A, SRV_A, 80)])

    r = run(pipeline(), ring_name, {"in": [fwd(0, CLI_A, SRV_A, 80, "S"),
                                           rep(1, CLI_A, SRV_A, 80, "SA")]}, then=then)
    assert seen["moved"] == {CLI_A: 1}
    assert seen["info"]["flows_revoked"] == 0
    assert sorted(r.ids("out")) == [0, 1, 2, 3]
    assert r.st.drops() == {}


def test_ipv6_flow_revoked(ring_name):
    """The same for an IPv6 connection: the flow's original tuple is looked up again."""
    from scapy.layers.inet6 import IPv6

    r6 = AclRule(0, action="allow", src="fd00:a::/64", dst="fd00:b::1/128", proto=6, dport=22)
    keep = AclRule(1, action="allow", src="fd00:a::/64", dst="fd00:b::2/128", proto=6,
                   dport=22)
    pl = Pipeline("rv6", ports=["in", "out"], inputs={"in": "parse"}, stages=[
        Parse("parse", next="ct"),
        STAGE_TYPES["conntrack"]("ct", next="pol", capacity=16, mode="confirm"),
        Policy("pol", next="fwd", conntrack="ct").use([r6, keep], 2),
        Forward("fwd", port="out", keep_src_mac=True)])

    def p6(i: int, src: str, dst: str, sport: int, dport: int) -> Any:
        return eth() / IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport) / tag(i)

    seen: dict[str, Any] = {}

    def then(dp: Dataplane) -> Any:
        acl.commit(dp, "pol", [keep], 2)
        seen["info"] = acl.info(dp, "pol")
        yield ("in", [p6(2, "fd00:a::5", "fd00:b::1", 999, 22),
                      p6(3, "fd00:b::1", "fd00:a::5", 22, 999),
                      p6(4, "fd00:a::5", "fd00:b::2", 999, 22)])

    r = run(pl, ring_name, {"in": [p6(0, "fd00:a::5", "fd00:b::1", 999, 22),
                                   p6(1, "fd00:a::5", "fd00:b::2", 999, 22)]}, then=then)
    assert seen["info"]["flows_revoked"] == 1
    assert sorted(r.ids("out")) == [0, 1, 4]
    assert r.st.drops() == {"pol/revoked": 2}


def test_revalidation_under_traffic_exact_accounting(ring_name):
    """50 commits alternate a policy that allows 256 UDP flows and one that also denies
    the upper half, while the template source sends them. Established flows of the
    upper half are cut (revoked) and re-admitted at every swap; the lower half never
    loses a packet; every packet has exactly one verdict."""
    import time

    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    from pydp import Source, Vary

    n = 256 * 24
    a = [AclRule(0, action="allow", src="10.0.0.0/24", dst="10.1.0.0/16", proto=17)]
    b = a + [AclRule(1, action="deny", src="10.0.0.128/25", priority=10)]
    src = Source([Ether() / IP(src="10.0.0.0", dst="10.1.0.1") / UDP(sport=5, dport=80)],
                 vary=[Vary("IP.src", "10.0.0.0", "10.0.0.255")], rate_pps=8000, count=n)
    pl = Pipeline("rvt", ports=["in", "out"], inputs={"in": "parse"}, stages=[
        Parse("parse", next="ct"),
        STAGE_TYPES["conntrack"]("ct", next="pol", capacity=1024, mode="confirm"),
        Policy("pol", next="fwd", conntrack="ct").use(a, 2),
        Forward("fwd", port="out", keep_src_mac=True)])
    out: list = []
    revoked_by_commit = []
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}, sources={"in": src}) as dp:
        dp.start()
        for i in range(50):
            acl.commit(dp, "pol", b if i % 2 == 0 else a, 2)
            revoked_by_commit.append(acl.info(dp, "pol")["flows_revoked"])
            out += dp.port("out").capture(count=None, timeout=0, idle=0, raw=True)
            time.sleep(0.01)
        deadline = time.monotonic() + 15
        while not dp.sources_done() and time.monotonic() < deadline:
            out += dp.port("out").capture(count=None, timeout=0, idle=0, raw=True)
            time.sleep(0.01)
        assert dp.sources_done()
        dp.stop()
        st = dp.stats()
        out += dp.port("out").capture(count=dp.port("out").pending(), raw=True)
        assert dp.pool.in_use() == 0
    assert st.rx == n
    assert st.rx == st.tx + st.dropped and st.balanced(), st.summary()
    drops = st.drops()
    assert set(drops) <= {"pol/revoked", "pol/policy-deny"}, drops
    cut = drops.get("pol/revoked", 0) + drops.get("pol/policy-deny", 0)
    assert drops.get("pol/revoked", 0) > 0, drops  # b met established upper flows
    low = sum(1 for p in out if p[14 + 15] < 128)  # last byte of the IPv4 source
    assert len(out) == st.tx
    assert low == n // 2  # allowed by both policies: never lost across a swap
    assert len(out) - low == n // 2 - cut
    # commits of b cut the upper flows that existed then; commits of a cut nothing
    assert all(r == 0 for r in revoked_by_commit[1::2]), revoked_by_commit
    assert max(revoked_by_commit[0::2]) <= 128
