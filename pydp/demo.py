"""Demo traffic: the built-in template source used by ``pydp demo`` and ``--generate``.

10,000 UDP flows over IPv4, a TCP and an IPv6 template, and one IPv4
template with a wrong header checksum so the demo shows a named drop.
"""

from __future__ import annotations

from .source import Source, Vary


def demo_source(rate_pps: float = 0, count: int = 0, flows: int = 10000) -> Source:
    """The demo's traffic mix as a :class:`Source`."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:fe")
    udp = eth / IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=1024, dport=80) / Raw(b"x" * 18)
    tcp = eth / IP(src="10.0.0.1", dst="10.0.1.2") / TCP(sport=2048, dport=443, flags="S")
    udp6 = eth / IPv6(src="fd00:1::1", dst="fd00:2::1") / UDP(sport=5000, dport=53) / Raw(b"y" * 10)
    bad = Ether(bytes(eth / IP(src="10.0.0.9", dst="10.0.1.9") / UDP() / Raw(b"z" * 18)))
    raw = bytearray(bytes(bad))
    raw[24] ^= 0xFF  # break the IPv4 header checksum
    per = max(1, flows // 100)  # flows = per source addresses x 100 source ports
    udp_vary = [Vary("IP.src", "10.0.0.1", f"10.0.{(per - 1) // 256}.{(per - 1) % 256 + 1}"),
                Vary("UDP.sport", 1024, 1024 + 99)]
    # the UDP template appears 7 times in 10 so the mix is mostly UDP/IPv4
    templates = [udp] * 7 + [tcp, udp6, bytes(raw)]
    vary = [Vary(v.field, v.lo, v.hi, template=i) for i in range(7) for v in udp_vary]
    vary += [Vary("TCP.sport", 2048, 2048 + 999, template=7),
             Vary("IPv6.src", "fd00:1::1", "fd00:1::3e8", template=8)]
    return Source(templates, vary=vary, rate_pps=rate_pps, count=count)
