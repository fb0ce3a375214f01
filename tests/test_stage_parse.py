"""The parse stage: which edge each well-formed packet takes, and the named drop
reason of each malformed one.

The pipeline forwards each parse edge (ipv4, ipv6, arp, other) to its own
port with MACs untouched, so a packet that passes must come out of exactly
its edge's port byte for byte as it went in.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from scapy.contrib.lldp import (
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUPortID,
    LLDPDUTimeToLive,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from test_stages import SRC_MAC, assert_same, edge_pipeline, eth, pid, run, tag

from pydp.stages import stage_drops

EDGE_PORT = {"ipv4": "v4", "ipv6": "v6", "arp": "arp", "other": "other"}
_ids = itertools.count(1)

V4 = {"src": "192.0.2.1", "dst": "198.51.100.1"}
V6 = {"src": "2001:db8::1", "dst": "2001:db8:1::1"}


def t() -> Raw:
    """The next unique payload id."""
    return tag(next(_ids))


def patch(pkt: Any, off: int, *values: int) -> bytes:
    """The frame's bytes with bytes from ``off`` replaced by ``values``."""
    b = bytearray(bytes(pkt))
    b[off:off + len(values)] = bytes(values)
    return bytes(b)


def pad(pkt: Any, to: int = 60, fill: int = 0xA5) -> bytes:
    """Ethernet padding up to ``to`` bytes (non-zero by default: it must not be read)."""
    b = bytes(pkt)
    assert len(b) < to
    return b + bytes([fill]) * (to - len(b))


def lldp() -> Ether:
    return (Ether(src=SRC_MAC, dst="01:80:c2:00:00:0e")
            / LLDPDUChassisID(subtype=4, id=b"\x02\x00\x00\x00\x00\x01")
            / LLDPDUPortID(subtype=7, id=bytes(t()))
            / LLDPDUTimeToLive(ttl=120) / LLDPDUEndOfLLDPDU())


def ext_chain(l4: Any, m: int = 1) -> Any:
    """IPv6 with Hop-by-Hop, Routing, Destination options and a first Fragment."""
    return (eth() / IPv6(**V6) / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrRouting(addresses=["2001:db8:2::1"]) / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrFragment(m=m, offset=0, id=0x1234) / l4)


def dest_opts(n: int) -> Any:
    p = IPv6ExtHdrDestOpt()
    for _ in range(n - 1):
        p = p / IPv6ExtHdrDestOpt()
    return p


TCP_GARBAGE = b"\x00" * 12 + b"\x00"  # as a TCP header: data offset 0
UDP_GARBAGE = b"\x00\x00\x00\x00\x00\x03\x00\x00"  # as a UDP header: length 3

# (id, edge, packet): well-formed packets and the edge they must take
VALID = [
    ("ipv4-tcp", "ipv4", eth() / IP(**V4) / TCP(sport=1, dport=2, flags="S") / t()),
    ("ipv4-tcp-options", "ipv4", eth() / IP(**V4) / TCP(options=[
        ("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b"")]) / t()),
    ("ipv4-udp", "ipv4", eth() / IP(**V4) / UDP(sport=1, dport=2) / t()),
    ("ipv4-icmp", "ipv4", eth() / IP(**V4) / ICMP() / t()),
    ("ipv4-options-ihl6", "ipv4",
     eth() / IP(options=[IPOption_Router_Alert()], **V4) / UDP() / t()),
    ("ipv4-options-ihl15", "ipv4", eth() / IP(options=[IPOption_NOP()] * 40, **V4) / TCP() / t()),
    ("ipv4-gre-no-l4-checks", "ipv4", eth() / IP(proto=47, **V4) / t()),
    ("ipv4-udp-zero-payload", "ipv4", pad(eth() / IP(**V4) / UDP(sport=7, dport=9))),
    ("ipv4-udp-padded-60", "ipv4", pad(eth() / IP(**V4) / UDP() / t())),
    ("ipv4-udp-zero-padded-60", "ipv4", pad(eth() / IP(**V4) / UDP() / t(), fill=0)),
    ("ipv4-tcp-padded-60", "ipv4", pad(eth() / IP(**V4) / TCP() / Raw(b"i;"))),
    ("ipv4-icmp-padded-60", "ipv4", pad(eth() / IP(**V4) / ICMP() / t())),
    ("ipv4-first-fragment-udp", "ipv4",
     eth() / IP(flags="MF", id=7, **V4) / UDP(len=8 + 1400) / t()),
    ("ipv4-first-fragment-tcp", "ipv4", eth() / IP(flags="MF", id=8, **V4) / TCP() / t()),
    ("ipv4-nonfirst-fragment-tcp", "ipv4",
     eth() / IP(frag=100, flags="MF", proto=6, **V4) / Raw(TCP_GARBAGE) / t()),
    ("ipv4-nonfirst-fragment-udp", "ipv4",
     eth() / IP(frag=185, proto=17, **V4) / Raw(UDP_GARBAGE) / t()),
    ("ipv4-nonfirst-fragment-short", "ipv4", eth() / IP(frag=1, proto=17, **V4) / t()),
    ("dot1q-ipv4", "ipv4", eth() / Dot1Q(vlan=10) / IP(**V4) / UDP() / t()),
    ("qinq-ipv4", "ipv4", eth() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP(**V4) / UDP() / t()),
    ("dot1q-dot1q-ipv4", "ipv4", eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(**V4) / TCP() / t()),
    ("ipv6-tcp", "ipv6", eth() / IPv6(**V6) / TCP(sport=1, dport=2) / t()),
    ("ipv6-udp", "ipv6", eth() / IPv6(**V6) / UDP(sport=1, dport=2) / t()),
    ("ipv6-icmpv6", "ipv6", eth() / IPv6(**V6) / ICMPv6EchoRequest(data=bytes(t()))),
    ("ipv6-ext-chain-first-fragment-udp", "ipv6", ext_chain(UDP(len=8 + 1400) / t())),
    ("ipv6-ext-chain-first-fragment-tcp", "ipv6", ext_chain(TCP() / t())),
    ("ipv6-atomic-fragment-udp", "ipv6", ext_chain(UDP() / t(), m=0)),
    ("ipv6-long-destopt", "ipv6", eth() / IPv6(**V6)
     / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 20)]) / UDP() / t()),
    ("ipv6-8-destopts", "ipv6", eth() / IPv6(**V6) / dest_opts(8) / UDP() / t()),
    ("ipv6-ah-udp", "ipv6", eth() / IPv6(nh=51, **V6)
     / AH(nh=17, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12) / UDP() / t()),
    ("ipv6-nonfirst-fragment-tcp", "ipv6", eth() / IPv6(**V6)
     / IPv6ExtHdrFragment(nh=6, offset=100, m=1) / Raw(TCP_GARBAGE) / t()),
    ("ipv6-hbh-nonfirst-fragment-udp", "ipv6", eth() / IPv6(**V6) / IPv6ExtHdrHopByHop()
     / IPv6ExtHdrFragment(nh=17, offset=5) / t()),
    ("ipv6-no-next-header-padded", "ipv6", pad(eth() / IPv6(nh=59, **V6))),
    ("ipv6-esp", "ipv6", eth() / IPv6(nh=50, **V6) / Raw(b"\x00\x00\x01\x00\x00\x00\x00\x01")
     / t()),
    ("ipv6-trailing-bytes", "ipv6", eth() / IPv6(**V6) / UDP() / t() / Raw(b"\xa5" * 16)),
    ("dot1q-ipv6", "ipv6", eth() / Dot1Q(vlan=20) / IPv6(**V6) / UDP() / t()),
    ("qinq-ipv6", "ipv6", eth() / Dot1AD(vlan=200) / Dot1Q(vlan=20) / IPv6(**V6) / TCP() / t()),
    ("arp-request", "arp", eth(dst="ff:ff:ff:ff:ff:ff")
     / ARP(hwsrc=SRC_MAC, psrc="192.0.2.1", pdst="192.0.2.2") / t()),
    ("arp-reply", "arp", eth() / ARP(op=2, hwsrc=SRC_MAC, psrc="192.0.2.2", pdst="192.0.2.1")),
    ("dot1q-arp", "arp", eth() / Dot1Q(vlan=5) / ARP(hwsrc=SRC_MAC) / t()),
    ("lldp", "other", lldp()),
    ("ethertype-88b5", "other", eth(type=0x88B5) / t()),
    ("dot1q-ethertype-88b5", "other", eth() / Dot1Q(vlan=3, type=0x88B5) / t()),
    ("802.3-length-field", "other", eth(type=0x0030) / Raw(b"\xaa\xaa\x03") / t()),
    ("ethernet-header-only", "other", eth(type=0x88B5)),
]


def longer(pkt: Any, layer: Any, field: str, extra: int) -> Any:
    """``pkt`` with the IP length field ``field`` set ``extra`` bytes beyond its real value."""
    real = len(bytes(pkt[layer])) - (40 if layer is IPv6 else 0)
    pkt[layer].setfieldval(field, real + extra)
    return pkt

# (id, drop reason, packet)
MALFORMED = [
    ("runt-10-bytes", "truncated-ethernet", b"\x02" * 10),
    ("runt-13-bytes", "truncated-ethernet", bytes(eth(type=0x0800))[:13]),
    ("cut-in-vlan-tag", "truncated-ethernet", bytes(eth() / Dot1Q(vlan=1))[:16]),
    ("qinq-plus-dot1q", "too-many-vlan-tags",
     eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(**V4) / UDP() / t()),
    ("three-dot1q", "too-many-vlan-tags",
     eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(**V4) / UDP() / t()),
    ("arp-27-bytes", "truncated-arp", bytes(eth() / ARP(hwsrc=SRC_MAC))[:14 + 27]),
    ("ipv4-10-bytes", "truncated-ip", bytes(eth() / IP(**V4) / UDP())[:24]),
    ("ipv4-ihl15-in-short-frame", "truncated-ip", patch(eth() / IP(**V4) / UDP() / t(), 14, 0x4F)),
    ("ipv6-39-bytes", "truncated-ip", bytes(eth() / IPv6(**V6) / UDP())[:14 + 39]),
    ("ipv4-ethertype-version-5", "bad-ip-version", patch(eth() / IP(**V4) / UDP() / t(), 14, 0x55)),
    ("ipv4-ethertype-ipv6-packet", "bad-ip-version", eth(type=0x0800) / IPv6(**V6) / TCP() / t()),
    ("ipv6-ethertype-ipv4-packet", "bad-ip-version",
     eth(type=0x86DD) / IP(**V4) / UDP() / t() / Raw(b"\x00" * 16)),
    ("ipv4-ihl4", "bad-ipv4-header-length", patch(eth() / IP(**V4) / UDP() / t(), 14, 0x44)),
    ("ipv4-ihl0", "bad-ipv4-header-length", patch(eth() / IP(**V4) / UDP() / t(), 14, 0x40)),
    ("ipv4-total-length-beyond-frame", "bad-ip-total-length",
     longer(eth() / IP(**V4) / UDP() / t(), IP, "len", 1)),
    ("ipv4-total-length-below-ihl", "bad-ip-total-length", eth() / IP(len=19, **V4) / UDP() / t()),
    ("ipv6-payload-length-beyond-frame", "bad-ip-total-length",
     longer(eth() / IPv6(**V6) / UDP() / t(), IPv6, "plen", 1)),
    ("ipv4-bad-checksum", "bad-ipv4-checksum", eth() / IP(chksum=0x0BAD, **V4) / UDP() / t()),
    ("ipv4-options-bad-checksum", "bad-ipv4-checksum",
     eth() / IP(chksum=0x0BAD, options=[IPOption_Router_Alert()], **V4) / UDP() / t()),
    ("ipv6-ext-cut-before-length", "truncated-ipv6-ext-header",
     eth() / IPv6(nh=60, plen=1, **V6) / Raw(b"\x3b") / t()),
    ("ipv6-destopt-longer-than-payload", "truncated-ipv6-ext-header",
     eth() / IPv6(nh=60, **V6) / Raw(b"\x3b\x05\x01\x04\x00\x00\x00\x00") / t()),
    ("ipv6-fragment-header-cut", "truncated-ipv6-ext-header",
     eth() / IPv6(nh=44, plen=6, **V6) / Raw(b"\x11\x00\x00\x00\x00\x00") / t()),
    ("ipv6-routing-after-hbh-cut", "truncated-ipv6-ext-header",
     eth() / IPv6(**V6) / IPv6ExtHdrHopByHop(nh=43) / Raw(b"\x11\x02\x00\x01") / t()),
    ("ipv6-ah-cut", "truncated-ipv6-ext-header",
     eth() / IPv6(nh=51, **V6) / Raw(b"\x11\x04\x00\x00\x00\x00\x00\x01") / t()),
    ("ipv6-9-destopts", "too-many-ipv6-ext-headers",
     eth() / IPv6(**V6) / dest_opts(9) / UDP() / t()),
    ("ipv6-hbh-and-8-destopts", "too-many-ipv6-ext-headers",
     eth() / IPv6(**V6) / IPv6ExtHdrHopByHop() / dest_opts(8) / TCP() / t()),
    ("ipv4-tcp-19-bytes", "truncated-l4", eth() / IP(proto=6, **V4) / Raw(b"\x00" * 19)),
    ("ipv4-tcp-no-header", "truncated-l4", pad(eth() / IP(proto=6, **V4))),
    ("ipv4-udp-7-bytes", "truncated-l4",
     eth() / IP(proto=17, **V4) / Raw(b"\x00\x01\x00\x02\x00\x07?")),
    ("ipv4-icmp-7-bytes", "truncated-l4", eth() / IP(proto=1, **V4) / Raw(b"\x08" + b"\x00" * 6)),
    ("ipv4-first-fragment-udp-4-bytes", "truncated-l4",
     eth() / IP(proto=17, flags="MF", **V4) / Raw(b"\x00\x01\x00\x02")),
    ("ipv6-tcp-10-bytes", "truncated-l4", eth() / IPv6(nh=6, **V6) / Raw(b"\x00" * 10)),
    ("ipv6-icmpv6-3-bytes", "truncated-l4",
     eth() / IPv6(nh=58, plen=3, **V6) / Raw(b"\x80\x00\x00") / t()),
    ("ipv6-hbh-udp-5-bytes", "truncated-l4",
     eth() / IPv6(**V6) / IPv6ExtHdrHopByHop(nh=17) / t()),
    ("tcp-data-offset-4", "bad-tcp-data-offset", eth() / IP(**V4) / TCP(dataofs=4) / t()),
    ("tcp-data-offset-0", "bad-tcp-data-offset", eth() / IP(**V4) / TCP(dataofs=0) / t()),
    ("tcp-data-offset-beyond-ip", "bad-tcp-data-offset",
     eth() / IP(**V4) / TCP(dataofs=15) / t()),
    ("ipv6-tcp-data-offset-3", "bad-tcp-data-offset", eth() / IPv6(**V6) / TCP(dataofs=3) / t()),
    ("udp-length-7", "bad-udp-length", eth() / IP(**V4) / UDP(len=7) / t()),
    ("udp-length-0", "bad-udp-length", eth() / IP(**V4) / UDP(len=0) / t()),
    ("udp-length-beyond-ip", "bad-udp-length", eth() / IP(**V4) / UDP(len=8 + 50) / t()),
    ("udp-length-covers-ethernet-padding", "bad-udp-length",
     pad(eth() / IP(**V4) / UDP(len=60 - 14 - 20) / t())),
    ("ipv6-udp-length-beyond-ip", "bad-udp-length", eth() / IPv6(**V6) / UDP(len=8 + 50) / t()),
    ("ipv6-atomic-fragment-udp-length-beyond-ip", "bad-udp-length",
     ext_chain(UDP(len=8 + 50) / t(), m=0)),
]


def _ids(cases: list) -> list[str]:
    return [c[0] for c in cases]


def test_case_tables_are_consistent():
    names = _ids(VALID) + _ids(MALFORMED)
    assert len(names) == len(set(names))
    assert len({pid(p) for _, _, p in VALID if pid(p) is not None}) == \
        len([p for _, _, p in VALID if pid(p) is not None])
    assert {e for _, e, _ in VALID} == set(EDGE_PORT)
    pl = edge_pipeline()
    assert {r for _, r, _ in MALFORMED} == set(stage_drops("parse"))
    assert pl.stage("parse").edge_names() == ("next", "ipv4", "ipv6", "arp", "other")


@pytest.mark.parametrize("name, edge, pkt", VALID, ids=_ids(VALID))
def test_parse_valid(ring_name, name, edge, pkt):
    """A well-formed packet takes its edge and comes out unchanged."""
    r = run(edge_pipeline(), ring_name, {"in": [pkt]})
    assert r.st.drops() == {}, f"{name} dropped"
    port = EDGE_PORT[edge]
    got = {p: len(v) for p, v in r.out.items() if v}
    assert got == {port: 1}, f"{name}: expected on {port}, got {got}"
    assert_same(r.out[port][0], pkt)


@pytest.mark.parametrize("name, reason, pkt", MALFORMED, ids=_ids(MALFORMED))
def test_parse_malformed(ring_name, name, reason, pkt):
    """A malformed packet between two good ones is dropped with its reason; the good pass."""
    good = [eth() / IP(**V4) / UDP() / tag(100000), eth() / IP(**V4) / UDP() / tag(100001)]
    r = run(edge_pipeline(), ring_name, {"in": [good[0], pkt, good[1]]})
    assert r.st.drops() == {f"parse/{reason}": 1}
    assert r.ids("v4") == [100000, 100001]
    assert all(not r.out[p] for p in ("v6", "arp", "other"))
    assert r.stage("parse")["in"] == 3


def test_edges_route_a_mixed_burst(ring_name):
    """Every valid and malformed packet in one burst: each lands on its edge's port, in
    order, and each malformed one is counted under its reason."""
    pkts, want, drops = [], {p: [] for p in EDGE_PORT.values()}, {}
    for (_, edge, p), bad in itertools.zip_longest(VALID, MALFORMED):
        if p is not None:
            pkts.append(p)
            want[EDGE_PORT[edge]].append(bytes(p))
        if bad is not None:
            pkts.append(bad[2])
            drops[f"parse/{bad[1]}"] = drops.get(f"parse/{bad[1]}", 0) + 1
    r = run(edge_pipeline(), ring_name, {"in": pkts * 2})
    for port, frames in want.items():
        assert [bytes(p) for p in r.out[port]] == frames * 2, port
    assert r.st.drops() == {k: 2 * v for k, v in drops.items()}


def test_unset_edges_default_to_next(ring_name):
    """Only ipv6 is linked: IPv4, ARP and other frames follow next."""
    pkts = [eth() / IP(**V4) / UDP() / tag(1), eth() / IPv6(**V6) / UDP() / tag(2),
            eth() / ARP(hwsrc=SRC_MAC) / tag(3), eth(type=0x88B5) / tag(4)]
    pl = edge_pipeline(ipv4=None, arp=None, other=None, next="f_v4")
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("v4") == [1, 3, 4]
    assert r.ids("v6") == [2]
    assert r.st.drops() == {}


def test_verify_checksum_false_lets_bad_checksum_through(ring_name):
    """verify_checksum=False: a bad IPv4 checksum passes unchanged; other checks stay on."""
    bad_sum = eth() / IP(chksum=0x0BAD, **V4) / UDP() / tag(1)
    bad_ihl = patch(eth() / IP(**V4) / UDP() / tag(2), 14, 0x44)
    good = eth() / IP(**V4) / UDP() / tag(3)
    r = run(edge_pipeline(verify_checksum=False), ring_name, {"in": [bad_sum, bad_ihl, good]})
    assert r.ids("v4") == [1, 3]
    assert_same(r.out["v4"][0], bad_sum)
    assert r.out["v4"][0][IP].chksum == 0x0BAD
    assert r.st.drops() == {"parse/bad-ipv4-header-length": 1}


def test_verify_checksum_true_is_the_default(ring_name):
    r = run(edge_pipeline(), ring_name,
            {"in": [eth() / IP(chksum=0x0BAD, **V4) / UDP() / tag(1)]})
    assert r.st.drops() == {"parse/bad-ipv4-checksum": 1}


def test_ipv4_fragments_pass_without_l4(ring_name):
    """All fragments of one datagram pass: the first carries UDP (its length covers the
    whole datagram), the others are not parsed as UDP."""
    from scapy.layers.inet import fragment
    whole = eth() / IP(id=99, **V4) / UDP(sport=5, dport=6) / Raw(b"id=1;" + b"\x00" * 1000)
    frags = [eth() / f for f in fragment(whole[IP], fragsize=256)]
    assert len(frags) > 2 and frags[1][IP].frag > 0
    r = run(edge_pipeline(), ring_name, {"in": frags})
    assert [bytes(p) for p in r.out["v4"]] == [bytes(f) for f in frags]
    assert r.st.drops() == {}


def test_ipv6_fragments_pass_without_l4(ring_name):
    from scapy.layers.inet6 import fragment6
    whole = (IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=5)
             / UDP(sport=5, dport=6) / Raw(b"id=1;" + b"\x00" * 1000))
    frags = [eth() / f for f in fragment6(whole, 300)]
    assert len(frags) > 2 and frags[1][IPv6ExtHdrFragment].offset > 0
    r = run(edge_pipeline(), ring_name, {"in": frags})
    assert [bytes(p) for p in r.out["v6"]] == [bytes(f) for f in frags]
    assert r.st.drops() == {}
