"""The l3route stage: LPM for IPv4 and IPv6, next-hop MACs and ports, TTL and hop
limit, its drop reasons, and route replacement while running.

Expected output is built with scapy: the input with the next hop's MACs, the
TTL (hop limit) one lower and, for IPv4, the header checksum recomputed by
scapy from scratch. The C stage updates the checksum incrementally; the two
must agree byte for byte.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from test_stages import SRC_MAC, assert_same, eth, pid, run, tag

from pydp import ConfigError, Dataplane, Pipeline
from pydp.stages import L3Route, NextHop, Parse, Route

NH0_DST = "02:00:00:00:00:a0"
NH1_DST = "02:00:00:00:00:b1"
NH1_SRC = "02:00:00:00:00:5e"  # nh1 sets its own source MAC; nh0 uses the port's
NEXTHOPS = [NextHop("nh0", "p0", NH0_DST), NextHop("nh1", "p1", NH1_DST, src_mac=NH1_SRC)]
ROUTES = [Route("10.0.0.0/8", "nh0"), Route("10.1.2.0/24", "nh1"),
          Route("fd00::/16", "nh0"), Route("fd00:1:2::/48", "nh1")]


def router(routes: list | None = None, nexthops: list | None = None) -> Pipeline:
    return Pipeline("router", ports=["in", "p0", "p1"], inputs={"in": "parse"},
                    stages=[Parse("parse", next="route"),
                            L3Route("route", nexthops=list(NEXTHOPS if nexthops is None
                                                           else nexthops),
                                    routes=list(ROUTES if routes is None else routes))])


def v4(i: int, dst: str, **ip: Any) -> Ether:
    return (eth() / IP(src="192.0.2.1", dst=dst, **ip) / UDP(sport=1000 + i % 60000, dport=53)
            / tag(i))


def v6(i: int, dst: str, **ip: Any) -> Ether:
    return eth() / IPv6(src="2001:db8::1", dst=dst, **ip) / TCP(sport=1000 + i % 60000) / tag(i)


def routed(pkt: Any, dst_mac: str, src_mac: str) -> bytes:
    """What a router sends: next-hop MACs, TTL - 1 with a fresh checksum / hop limit - 1."""
    q = Ether(bytes(pkt))
    q.dst, q.src = dst_mac, src_mac
    if IP in q:
        q[IP].ttl -= 1
        del q[IP].chksum
    else:
        q[IPv6].hlim -= 1
    return bytes(q)


def check_routed(r: Any, sent: list, where: dict[int, str]) -> None:
    """Each sent packet whose id is in ``where`` left that next hop's port, routed."""
    nh = {"nh0": ("p0", NH0_DST, r.macs["p0"]), "nh1": ("p1", NH1_DST, NH1_SRC)}
    by_id = {pid(p): p for p in sent}
    for name, (port, _, _) in nh.items():
        assert r.ids(port) == [i for i in by_id if where.get(i) == name], port
    for i, hop in where.items():
        port, dmac, smac = nh[hop]
        assert_same(r.by_id(port)[i], routed(by_id[i], dmac, smac))


DESTS = [  # (dst, next hop): the /24 (/48) beats the /8 (/16)
    ("10.1.2.3", "nh1"), ("10.1.2.255", "nh1"), ("10.1.2.0", "nh1"), ("10.1.3.1", "nh0"),
    ("10.1.1.255", "nh0"), ("10.0.0.1", "nh0"), ("10.255.255.255", "nh0"),
    ("fd00:1:2::5", "nh1"), ("fd00:1:2:ffff::1", "nh1"), ("fd00:1:3::1", "nh0"),
    ("fd00:ffff::1", "nh0"), ("fd00::", "nh0"),
]


@pytest.mark.parametrize("order", ["listed", "reversed"])
def test_longest_prefix_wins(ring_name, order):
    routes = ROUTES if order == "listed" else ROUTES[::-1]
    sent = [(v6 if ":" in d else v4)(i, d) for i, (d, _) in enumerate(DESTS)]
    r = run(router(routes), ring_name, {"in": sent})
    check_routed(r, sent, {i: nh for i, (_, nh) in enumerate(DESTS)})
    assert r.st.drops() == {}
    assert r.macs["p0"] != SRC_MAC  # nh0's source MAC is the port's


def test_no_route(ring_name):
    sent = [v4(0, "10.1.2.3"), v4(1, "192.168.1.1"), v4(2, "11.0.0.1"), v4(3, "9.255.255.255"),
            v6(4, "2001:db8::1"), v6(5, "fd01::1"), v6(6, "fcff:ffff::1"), v6(7, "fd00::1")]
    r = run(router(), ring_name, {"in": sent})
    check_routed(r, sent, {0: "nh1", 7: "nh0"})
    assert r.st.drops() == {"route/no-route": 6}


def test_no_routes_at_all(ring_name):
    sent = [v4(0, "10.1.2.3"), v6(1, "fd00::1")]
    r = run(router(routes=[]), ring_name, {"in": sent})
    assert r.st.drops() == {"route/no-route": 2}


def test_host_routes_and_shortest_prefixes(ring_name):
    """/32 and /128 beat the /1 and /8 (/16) that cover them; /1 halves cover everything."""
    routes = [Route("0.0.0.0/1", "nh0"), Route("128.0.0.0/1", "nh0"), Route("10.9.9.9/32", "nh1"),
              Route("fd00::/16", "nh0"), Route("fd00::9/128", "nh1")]
    dests = [("10.9.9.9", "nh1"), ("10.9.9.8", "nh0"), ("255.255.255.255", "nh0"),
             ("0.0.0.1", "nh0"), ("fd00::9", "nh1"), ("fd00::8", "nh0")]
    sent = [(v6 if ":" in d else v4)(i, d) for i, (d, _) in enumerate(dests)]
    r = run(router(routes), ring_name, {"in": sent})
    check_routed(r, sent, {i: nh for i, (_, nh) in enumerate(dests)})


@pytest.mark.parametrize("default", ["0.0.0.0/0", "::/0"])
def test_default_route(ring_name, default):
    routes = [Route(default, "nh0"), Route("10.9.9.9/32", "nh1"), Route("fd00::9/128", "nh1")]
    dests = [("10.9.9.9", "nh1"), ("fd00::9", "nh1"),
             ("1.1.1.1" if "." in default else "2001:db8::1", "nh0")]
    sent = [(v6 if ":" in d else v4)(i, d) for i, (d, _) in enumerate(dests)]
    r = run(router(routes), ring_name, {"in": sent})
    check_routed(r, sent, {i: nh for i, (_, nh) in enumerate(dests)})


def test_ttl_and_hop_limit(ring_name):
    """TTL / hop limit 1 and 0 are dropped as ttl-exceeded; 2 leaves with 1."""
    sent = [v4(0, "10.1.2.3", ttl=1), v4(1, "10.1.2.3", ttl=0), v4(2, "10.0.0.1", ttl=2),
            v4(3, "10.0.0.1", ttl=255), v6(4, "fd00::1", hlim=1), v6(5, "fd00::1", hlim=0),
            v6(6, "fd00:1:2::1", hlim=2), v6(7, "fd00::1", hlim=255)]
    r = run(router(), ring_name, {"in": sent})
    check_routed(r, sent, {2: "nh0", 3: "nh0", 6: "nh1", 7: "nh0"})
    assert [p[IP].ttl for p in r.out["p0"] if IP in p] == [1, 254]
    assert [p[IPv6].hlim for p in r.out["p0"] if IPv6 in p] == [254]
    assert [p[IPv6].hlim for p in r.out["p1"]] == [1]
    assert r.st.drops() == {"route/ttl-exceeded": 4}


def test_ipv4_checksum_after_ttl_decrement(ring_name):
    """Incremental checksum update == scapy's full recomputation, over many headers."""
    rnd = random.Random(7)
    sent = []
    for i in range(96):
        opts = rnd.choice([[], [IPOption_Router_Alert()], [IPOption_NOP()] * 8])
        ip = IP(src=f"192.0.{rnd.randrange(256)}.{rnd.randrange(256)}",
                dst=f"10.{rnd.choice([1, 7])}.2.{rnd.randrange(256)}",
                ttl=rnd.randrange(2, 256), id=rnd.randrange(65536), tos=rnd.randrange(256),
                flags=rnd.choice([0, 2]), proto=rnd.choice([1, 6, 17]), options=opts)
        l4 = {1: ICMP(), 6: TCP(), 17: UDP()}[ip.proto]
        sent.append(eth() / ip / l4 / tag(i))
    # and the corner cases of a one's-complement sum
    for i, (ttl, proto) in enumerate([(2, 0), (2, 255), (255, 255), (128, 0x80), (3, 47)], 96):
        sent.append(eth() / IP(dst="10.0.0.1", ttl=ttl, proto=proto) / tag(i))
    r = run(router(), ring_name, {"in": sent})
    out = r.out["p0"] + r.out["p1"]
    assert len(out) == len(sent)
    for p in out:
        c = p[IP].chksum
        q = p.copy()
        del q[IP].chksum
        assert Ether(bytes(q))[IP].chksum == c, p.summary()
    where = {i: ("nh1" if p[IP].dst.startswith("10.1.2.") else "nh0")
             for i, p in enumerate(sent)}
    for i, p in enumerate(sent):
        port = "p1" if where[i] == "nh1" else "p0"
        want = routed(p, NH1_DST if port == "p1" else NH0_DST,
                      NH1_SRC if port == "p1" else r.macs["p0"])
        assert_same(r.by_id(port)[i], want)


def test_vlan_tagged_packets_are_routed(ring_name):
    """TTL and hop limit are found behind 802.1Q and QinQ tags; the tags are kept."""
    sent = [eth() / Dot1Q(vlan=10) / IP(dst="10.1.2.3", ttl=9) / UDP() / tag(0),
            eth() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(dst="10.0.0.3", ttl=64,
                                                           options=[IPOption_Router_Alert()])
            / UDP() / tag(1),
            eth() / Dot1Q(vlan=20) / IPv6(dst="fd00:1:2::1", hlim=7) / UDP() / tag(2),
            eth() / Dot1Q(vlan=10) / IP(dst="10.1.2.3", ttl=1) / UDP() / tag(3)]
    r = run(router(), ring_name, {"in": sent})
    check_routed(r, sent, {0: "nh1", 1: "nh0", 2: "nh1"})
    assert r.st.drops() == {"route/ttl-exceeded": 1}


def test_icmp_and_icmpv6_are_routed(ring_name):
    sent = [eth() / IP(dst="10.1.2.1") / ICMP() / tag(0),
            eth() / IPv6(dst="fd00::2") / ICMPv6EchoRequest(data=bytes(tag(1)))]
    r = run(router(), ring_name, {"in": sent})
    assert [len(r.out["p0"]), len(r.out["p1"])] == [1, 1]
    assert_same(r.out["p1"][0], routed(sent[0], NH1_DST, NH1_SRC))
    assert_same(r.out["p0"][0], routed(sent[1], NH0_DST, r.macs["p0"]))


def test_not_ip(ring_name):
    """ARP and non-IP frames reach l3route through parse's next edge: not-ip."""
    sent = [eth() / ARP(hwsrc=SRC_MAC, pdst="10.1.2.3") / tag(0), v4(1, "10.1.2.3"),
            eth(type=0x88CC) / tag(2), eth() / Dot1Q(vlan=3) / ARP(hwsrc=SRC_MAC) / tag(3)]
    r = run(router(), ring_name, {"in": sent})
    check_routed(r, sent, {1: "nh1"})
    assert r.st.drops() == {"route/not-ip": 3}


def test_set_routes_while_running(ring_name):
    """Route changes published while traffic flows take effect for the next packets."""
    dsts = ["10.1.2.3", "fd00:1:2::3"]

    def batch(k: int) -> list:
        return [v4(10 * k, dsts[0]), v6(10 * k + 1, dsts[1])]

    def then(dp: Dataplane):
        assert dp.running
        dp.set_routes("route", [Route("10.0.0.0/8", "nh0"), Route("fd00::/16", "nh0")])
        yield "in", batch(1)                      # now the /8 (/16): nh0
        dp.set_routes("route", [])
        yield "in", batch(2)                      # no routes
        dp.set_routes("route", [Route("10.1.2.0/24", "nh9"), Route("fd00:1::/32", "nh9")],
                      nexthops=[NextHop("nh9", "p0", "02:00:00:00:00:99", src_mac=NH1_SRC)])
        yield "in", batch(3)                      # new next hop on p0
        with pytest.raises(ConfigError, match="no next hop named 'nope'"):
            dp.set_routes("route", [Route("10.0.0.0/8", "nope")])
        with pytest.raises(ConfigError, match="prefix"):
            dp.set_routes("route", [Route("10.0.0.0/33", "nh9")])
        yield "in", batch(4)                      # a refused update leaves the table alone
        assert dp.pipeline.stage("route").routes[0].via == "nh9"

    sent = batch(0) + batch(1) + batch(2) + batch(3) + batch(4)
    r = run(router(), ring_name, {"in": batch(0)}, then=then)
    assert r.ids("p1") == [0, 1]
    assert r.ids("p0") == [10, 11, 30, 31, 40, 41]
    by_id = {pid(p): p for p in sent}
    for i in (30, 31, 40, 41):
        assert_same(r.by_id("p0")[i], routed(by_id[i], "02:00:00:00:00:99", NH1_SRC))
    for i in (10, 11):
        assert_same(r.by_id("p0")[i], routed(by_id[i], NH0_DST, r.macs["p0"]))
    assert r.st.drops() == {"route/no-route": 2}


def test_set_routes_many_prefixes(ring_name):
    """A table of 2000 prefixes swapped in while running; every one is used."""
    routes = [Route(f"10.{i // 256}.{i % 256}.0/24", "nh1" if i % 2 else "nh0")
              for i in range(1000)]
    routes += [Route(f"fd00:{i:x}::/32", "nh1" if i % 2 else "nh0") for i in range(1000)]
    picks = list(range(0, 1000, 37))

    def then(dp: Dataplane):
        dp.set_routes("route", routes)
        yield "in", [v4(i, f"10.{i // 256}.{i % 256}.9") for i in picks] + \
            [v6(5000 + i, f"fd00:{i:x}::9") for i in picks]

    r = run(router(routes=[]), ring_name, {"in": [v4(99999, "10.0.0.1")]}, then=then)
    want1 = [i for i in picks if i % 2] + [5000 + i for i in picks if i % 2]
    want0 = [i for i in picks if not i % 2] + [5000 + i for i in picks if not i % 2]
    assert r.ids("p1") == want1
    assert r.ids("p0") == want0
    assert r.st.drops() == {"route/no-route": 1}
