"""Write the seed corpus for the parser fuzzer: one raw frame per file.

Usage: python3 fuzz/corpus.py OUTDIR

The frames cover every branch of csrc/stages/parse.c: Ethernet, 802.1Q,
QinQ, ARP, IPv4 with options and fragments, IPv6 extension header chains,
TCP, UDP, ICMP, ICMPv6, non-IP ethertypes, and truncated or malformed
variants. Output is deterministic, so CI runs start from the same seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Padding, Raw

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
V4_SRC, V4_DST = "10.0.0.1", "10.0.0.2"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8::2"
PAYLOAD = Raw(b"pydp-fuzz-seed!!")


def _eth() -> Packet:
    """Return the Ethernet header every seed starts with."""
    return Ether(src=SRC_MAC, dst=DST_MAC)


def _v4(**kw: object) -> Packet:
    """Return an IPv4 header with fixed addresses and id."""
    return IP(**{"src": V4_SRC, "dst": V4_DST, "id": 1, **kw})


def _v6(**kw: object) -> Packet:
    """Return an IPv6 header with fixed addresses."""
    return IPv6(**{"src": V6_SRC, "dst": V6_DST, **kw})


def _with_ip_cksum(frame: bytes, l3_off: int, cksum: int) -> bytes:
    """Return `frame` with the IPv4 header checksum at `l3_off` replaced."""
    b = bytearray(frame)
    b[l3_off + 10 : l3_off + 12] = cksum.to_bytes(2, "big")
    return bytes(b)


def well_formed() -> dict[str, bytes]:
    """Return valid frames, one per protocol path of the parser, by name."""
    pkts: dict[str, Packet] = {
        "ipv4_tcp": _eth() / _v4() / TCP(sport=1234, dport=80, flags="S") / PAYLOAD,
        "ipv4_tcp_opts": _eth()
        / _v4()
        / TCP(sport=1, dport=2, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]),
        "ipv4_udp": _eth() / _v4() / UDP(sport=5353, dport=53) / PAYLOAD,
        "ipv4_udp_empty": _eth() / _v4() / UDP(sport=1, dport=2),
        "ipv4_icmp": _eth() / _v4() / ICMP(id=1, seq=1) / PAYLOAD,
        "ipv4_gre_proto": _eth() / _v4(proto=47) / PAYLOAD,
        "ipv4_options": _eth()
        / _v4(options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"]), IPOption_NOP()])
        / UDP(sport=1, dport=2)
        / PAYLOAD,
        "ipv4_first_frag_udp": _eth()
        / _v4(flags="MF", frag=0)
        / UDP(sport=1, dport=2, len=3008)
        / PAYLOAD,
        "ipv4_later_frag": _eth() / _v4(flags="MF", frag=185, proto=17) / PAYLOAD,
        "ipv4_no_payload": _eth() / _v4(proto=253),
        "ipv4_udp_eth_padded": _eth() / _v4() / UDP(sport=1, dport=2) / Padding(b"\x00" * 18),
        "ipv6_tcp": _eth() / _v6() / TCP(sport=1234, dport=443, flags="PA") / PAYLOAD,
        "ipv6_udp": _eth() / _v6() / UDP(sport=1, dport=2) / PAYLOAD,
        "ipv6_icmpv6_echo": _eth() / _v6() / ICMPv6EchoRequest(id=1, seq=1) / PAYLOAD,
        "ipv6_icmpv6_ns": _eth() / _v6(dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt=V6_DST),
        "ipv6_ext_chain_udp": _eth()
        / _v6()
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::10", "2001:db8::11"])
        / IPv6ExtHdrFragment(offset=0, m=0, id=7)
        / UDP(sport=1, dport=2)
        / PAYLOAD,
        "ipv6_ext_chain_icmpv6": _eth()
        / _v6()
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / ICMPv6EchoRequest()
        / PAYLOAD,
        "ipv6_first_frag_udp": _eth()
        / _v6()
        / IPv6ExtHdrFragment(offset=0, m=1, id=9)
        / UDP(sport=1, dport=2, len=3008)
        / PAYLOAD,
        "ipv6_later_frag": _eth()
        / _v6()
        / IPv6ExtHdrFragment(offset=100, m=0, id=9, nh=17)
        / PAYLOAD,
        "ipv6_ah_tcp": _eth()
        / _v6()
        / AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12)
        / TCP()
        / PAYLOAD,
        "ipv6_no_next": _eth() / _v6(nh=59) / PAYLOAD,
        "ipv6_no_payload_proto": _eth() / _v6(nh=50),
        "arp_request": _eth() / ARP(op=1, psrc=V4_SRC, pdst=V4_DST, hwsrc=SRC_MAC),
        "vlan_ipv4_udp": _eth() / Dot1Q(vlan=10) / _v4() / UDP(sport=1, dport=2) / PAYLOAD,
        "vlan_ipv6_tcp": _eth() / Dot1Q(vlan=20, prio=5) / _v6() / TCP() / PAYLOAD,
        "vlan_arp": _eth() / Dot1Q(vlan=30) / ARP(op=2, psrc=V4_SRC, pdst=V4_DST),
        "qinq_ipv4_tcp": _eth() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / _v4() / TCP() / PAYLOAD,
        "qinq_ipv6_icmpv6": _eth()
        / Dot1AD(vlan=100)
        / Dot1Q(vlan=10)
        / _v6()
        / ICMPv6EchoRequest(),
        "vlan_too_deep": _eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / _v4() / UDP(),
        "lldp_other": Ether(src=SRC_MAC, dst="01:80:c2:00:00:0e", type=0x88CC)
        / Raw(b"\x02\x07\x04" + b"\x02\x00\x00\x00\x00\x01" + b"\x00\x00"),
    }
    return {name: bytes(p) for name, p in pkts.items()}


def malformed(good: dict[str, bytes]) -> dict[str, bytes]:
    """Return malformed and truncated variants derived from `good` frames."""
    out: dict[str, bytes] = {}
    v4 = good["ipv4_tcp"]
    out["ipv4_bad_cksum"] = _with_ip_cksum(v4, 14, 0x1234)
    out["ipv4_zero_cksum"] = _with_ip_cksum(v4, 14, 0)
    out["ipv4_bad_version"] = v4[:14] + b"\x65" + v4[15:]
    out["ipv4_ihl_too_small"] = v4[:14] + b"\x44" + v4[15:]
    out["ipv4_ihl_too_big"] = v4[:14] + b"\x4f" + v4[15:]
    out["ipv4_tot_len_huge"] = bytes(_eth() / _v4(len=9000) / UDP() / PAYLOAD)
    out["ipv4_tot_len_small"] = bytes(_eth() / _v4(len=10) / UDP() / PAYLOAD)
    out["ipv4_tcp_bad_doff"] = bytes(_eth() / _v4() / TCP(dataofs=15))
    out["ipv4_tcp_doff_small"] = bytes(_eth() / _v4() / TCP(dataofs=2))
    out["ipv4_udp_bad_len"] = bytes(_eth() / _v4() / UDP(len=4) / PAYLOAD)
    out["ipv4_udp_len_huge"] = bytes(_eth() / _v4() / UDP(len=2000) / PAYLOAD)
    out["ipv6_plen_huge"] = bytes(_eth() / _v6(plen=4000) / UDP() / PAYLOAD)
    out["ipv6_bad_version"] = bytes(_eth() / IPv6(version=4) / UDP())
    out["ipv6_ext_len_huge"] = bytes(_eth() / _v6() / IPv6ExtHdrHopByHop(len=200) / UDP() / PAYLOAD)
    ext9 = _eth() / _v6()
    for _ in range(9):
        ext9 = ext9 / IPv6ExtHdrDestOpt()
    out["ipv6_ext_too_many"] = bytes(ext9 / UDP())
    out["eth_short"] = good["ipv4_tcp"][:13]
    out["empty"] = b""
    # every prefix of a few rich frames: each length check gets its boundary
    for name in (
        "ipv4_options",
        "ipv6_ext_chain_udp",
        "qinq_ipv4_tcp",
        "arp_request",
        "ipv6_ah_tcp",
    ):
        frame = good[name]
        for cut in range(12, len(frame), 3):
            out[f"trunc_{name}_{cut}"] = frame[:cut]
    return out


def build() -> dict[str, bytes]:
    """Return every seed frame by file name."""
    good = well_formed()
    seeds = {f"{k}.bin": v for k, v in good.items()}
    seeds.update({f"bad_{k}.bin": v for k, v in malformed(good).items()})
    return seeds


def main(argv: list[str] | None = None) -> int:
    """Write the seed corpus into the directory named on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path, help="directory to write the seeds into")
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    seeds = build()
    for name, data in sorted(seeds.items()):
        (args.outdir / name).write_bytes(data)
    print(f"wrote {len(seeds)} seeds to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
