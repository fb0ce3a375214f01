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
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PIPELINES
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from test_stages import assert_ipv4_cksum_ok, eth, pid, run, tag

from pydp import ConfigError, Dataplane, InvalidArgument, Pipeline
from pydp.esp import SA, Lifetime
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


def seal(ssa: SecurityAssociation, pkt: Any, seq: int) -> Any:
    """scapy-encrypt with sequence number ``seq`` (64-bit with ESN). Set on the
    SA: scapy's encrypt(seq_num=0) would fall back to its own counter."""
    ssa.seq_num = seq & 0xFFFFFFFF
    if ssa.esn_en:
        return ssa.encrypt(pkt, esn_en=True, esn=seq >> 32)
    return ssa.encrypt(pkt)


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
    """The outer IP header of a frame pydp sent; an outer IPv4 checksum must be right."""
    e = Ether(bytes(frame))
    if IP in e and e.type == 0x0800:
        assert_ipv4_cksum_ok(e)
        return e[IP]
    return e[IPv6]


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


def test_tshark_dissects_pydp_output(ring_name, tmp_path):
    """tshark (an independent dissector) reads pydp's frames as ESP with the
    SA's SPI and sequence numbers 1..n, IPv4 and IPv6 outside."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    outs = [mk_sa(0x3100, "out", "aes-gcm-128", 4, 4), mk_sa(0x3200, "out", "aes-gcm-256", 6, 6)]
    clear = [eth() / inner_pkt(i, 4) for i in range(4)] + \
        [eth() / inner_pkt(10 + i, 6) for i in range(3)]
    r = run(gateway(outs), ring_name, {"inside": clear})
    pcap = tmp_path / "esp.pcap"
    wrpcap(str(pcap), r.out["outside"])
    res = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.proto",
                          "-e", "ipv6.nxt", "-e", "esp.spi", "-e", "esp.sequence"],
                         capture_output=True, text=True, timeout=60, check=True)
    rows = [ln.split("\t") for ln in res.stdout.strip().splitlines()]
    assert len(rows) == 7
    spis = [int(r_[2], 16) if r_[2].startswith("0x") else int(r_[2]) for r_ in rows]
    assert sorted(spis) == [0x3100] * 4 + [0x3200] * 3
    seqs = {s: sorted(int(r_[3]) for r_, x in zip(rows, spis) if x == s) for s in set(spis)}
    assert seqs == {0x3100: [1, 2, 3, 4], 0x3200: [1, 2, 3]}
    assert all("50" in (r_[0], r_[1]) for r_ in rows)


def test_replay_tamper_unknown_spi_window_exact_counters(ring_name):
    """Each bad packet is dropped with its own reason, counted on the stage and
    on the SA; good ones in the window (late but unseen) still pass."""
    sa = mk_sa(0x4000, "in", "aes-gcm-128", 4, 4, replay_window=64)
    ssa = scapy_sa(sa)

    def enc(seq: int, i: int, **kw: Any) -> Any:
        return eth() / seal(ssa, inner_pkt(i, 4, **kw), seq)

    first = [enc(s, s) for s in range(1, 101) if s != 90]         # 99 packets, 90 held back
    late = enc(90, 90)                                              # in window, unseen: passes
    replay_top = enc(100, 5100)                                     # seen
    replay_mid = enc(50, 5050)                                      # seen, inside the window
    edge = enc(36, 5036)                                            # the window is 37..100
    old = enc(10, 5010)                                             # 10 + 64 < 100: behind it
    zero = enc(0, 5000)                                             # 0 is never valid
    t = bytearray(bytes(enc(101, 5101)))
    t[-20] ^= 0x01                                                  # a ciphertext bit flipped
    tampered = Ether(bytes(t))
    t = bytearray(bytes(enc(102, 5102)))
    t[-1] ^= 0x80                                                   # an ICV bit flipped
    bad_icv = Ether(bytes(t))
    other = SecurityAssociation(ESP, spi=0x4999, crypt_algo="AES-GCM",
                                crypt_key=bytes(sa.key), tunnel_header=IP(src=sa.tunnel_src,
                                                                           dst=sa.tunnel_dst))
    unknown = eth() / other.encrypt(inner_pkt(5200, 4))
    wrong_tun = eth() / SecurityAssociation(
        ESP, spi=sa.spi, crypt_algo="AES-GCM", crypt_key=bytes(sa.key),
        tunnel_header=IP(src="198.51.100.9", dst=sa.tunnel_dst)).encrypt(inner_pkt(5300, 4))
    off_sel = enc(103, 5103, dst="10.99.0.1")                       # decrypts, not SA traffic
    plain = eth() / inner_pkt(5400, 4)                              # cleartext from outside
    dup = enc(104, 104)                                             # twice in one burst
    second = [late, replay_top, replay_mid, edge, old, zero, tampered, bad_icv, unknown,
              wrong_tun, off_sel, plain, dup, dup]

    def more(dp: Dataplane) -> list:
        return [("outside", second)]

    r = run(gateway(dec=[sa]), ring_name, {"outside": first}, then=more)
    assert sorted(r.ids("inside")) == sorted([s for s in range(1, 101)] + [104])
    assert r.st.drops() == {"dec/replayed": 3, "dec/out-of-window": 3, "dec/auth-failed": 2,
                            "dec/unknown-spi": 1, "dec/tunnel-mismatch": 1,
                            "dec/selector-mismatch": 1, "dec/not-esp": 1}


def test_replay_counts_on_the_sa_and_window_4096(ring_name):
    """Per-SA drop counters and a 4096 window: 4000 behind the top still passes."""
    sa = mk_sa(0x4100, "in", "chacha20-poly1305", 6, 4, replay_window=4096)
    ssa = scapy_sa(sa)
    first = [eth() / seal(ssa, inner_pkt(s, 6), s) for s in (5000, 4999)]
    second = [eth() / seal(ssa, inner_pkt(1000, 6), 1000),   # 1000 + 4096 > 5000
              eth() / seal(ssa, inner_pkt(900, 6), 900),     # 900 + 4096 <= 5000
              first[0]]
    seen: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        yield ("outside", second)           # run() injects and settles it, then resumes
        seen["sa"] = dp.sa_list("dec")

    r = run(gateway(dec=[sa]), ring_name, {"outside": first}, then=grab)
    assert sorted(r.ids("inside")) == [1000, 4999, 5000]
    assert r.st.drops() == {"dec/out-of-window": 1, "dec/replayed": 1}
    (info,) = seen["sa"]
    assert info["drops"]["out-of-window"] == 1 and info["drops"]["replayed"] == 1
    assert sum(info["drops"].values()) == 2
    assert info["packets"] == 3 and info["seq"] == 5000 and info["replay_window"] == 4096
    assert info["bytes"] == sum(len(inner_pkt(i, 6)) for i in (1000, 4999, 5000))


# -- extended sequence numbers, exhaustion, lifetimes -------------------------------------
@pytest.mark.parametrize("c_out,c_in", [("aes-gcm-256", "chacha20-poly1305"),
                                         ("chacha20-poly1305", "aes-gcm-128")])
def test_esn_across_the_32_bit_boundary_both_directions(ring_name, c_out, c_in):
    """ESN: pydp sends 2^32-3 .. 2^32+2 (scapy decrypts with the right high
    bits) and accepts scapy's packets across the boundary; sa_list shows the
    64-bit number and its high half."""
    start = 2**32 - 3
    out = mk_sa(0x5000, "out", c_out, 4, 6, esn=True, initial_seq=start)
    inb = mk_sa(0x5100, "in", c_in, 6, 4, esn=True, initial_seq=2**32 - 10,
                selectors=[{"src": INNER[6][1], "dst": INNER[6][0]}])
    inb.tunnel_src, inb.tunnel_dst = inb.tunnel_dst, inb.tunnel_src
    clear = [eth() / inner_pkt(i, 4) for i in range(6)]
    ssa_in = scapy_sa(inb, esn_en=True)
    esp = []
    for k, s in enumerate(range(2**32 - 5, 2**32 + 5)):
        p = inner_pkt(100 + k, 6, src=INNER[6][3], dst=INNER[6][2])
        esp.append(eth() / seal(ssa_in, p, s))
    seen: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        seen["out"], seen["in"] = dp.sa_list("enc"), dp.sa_list("dec")
        yield from ()

    r = run(gateway([out], [inb]), ring_name, {"inside": clear, "outside": esp}, then=grab)
    assert r.st.drops() == {}
    ssa_out = scapy_sa(out, esn_en=True)
    got = []
    for frame in r.out["outside"]:
        o = outer_ip(frame)
        low = o[ESP].seq
        high = 0 if low >= start & 0xFFFFFFFF else 1
        got.append((high << 32 | low, pid(ssa_out.decrypt(o, esn_en=True, esn=high))))
    assert sorted(got) == [(start + i, i) for i in range(6)]
    assert sorted(r.ids("inside")) == list(range(100, 110))
    assert seen["out"][0]["seq"] == start + 5 and seen["out"][0]["esn_high"] == 1
    assert seen["in"][0]["seq"] == 2**32 + 4 and seen["in"][0]["esn_high"] == 1


def test_sequence_exhaustion_raises_the_rekey_event(ring_name):
    """Without ESN the last sequence numbers go out, the rest is dropped as
    seq-exhausted; sa_events reports nearing exhaustion once, then exhaustion."""
    out = mk_sa(0x5200, "out", "aes-gcm-128", 4, 4, initial_seq=2**32 - 5, seq_margin=100)
    ev: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        ev["after"] = dp.sa_events("enc")
        ev["again"] = dp.sa_events("enc")
        ev["list"] = dp.sa_list("enc")
        yield from ()

    r = run(gateway([out]), ring_name, {"inside": [eth() / inner_pkt(i, 4) for i in range(10)]},
            then=grab)
    assert r.st.drops() == {"enc/seq-exhausted": 6}
    seqs = sorted(outer_ip(f)[ESP].seq for f in r.out["outside"])
    assert seqs == [2**32 - 5, 2**32 - 4, 2**32 - 3, 2**32 - 2]
    assert [(e["event"], e["spi"]) for e in ev["after"]] == [
        ("seq-nearing-exhaustion", 0x5200), ("seq-exhausted", 0x5200)]
    assert ev["again"] == []
    (info,) = ev["list"]
    assert info["state"] == "hard-expired" and info["drops"]["seq-exhausted"] == 6
    assert info["packets"] == 4


def test_lifetime_packets_soft_and_hard(ring_name):
    """soft_packets raises soft-expired (the rekey trigger); at hard_packets
    the SA stops: exactly hard_packets pass, the rest is sa-expired."""
    lt = Lifetime(soft_packets=3, hard_packets=5, soft_seconds=3600, hard_seconds=7200)
    out = mk_sa(0x5300, "out", "aes-gcm-128", 6, 6, lifetime=lt)
    ev: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        ev["first"] = dp.sa_events("enc")
        yield ("inside", [eth() / inner_pkt(10 + i, 6) for i in range(4)])
        ev["second"] = dp.sa_events("enc")
        ev["list"] = dp.sa_list("enc")

    r = run(gateway([out]), ring_name, {"inside": [eth() / inner_pkt(i, 6) for i in range(4)]},
            then=grab)
    assert r.ids("outside") == [None] * 5  # encrypted: no id in clear on the wire
    plain = sorted(pid(scapy_sa(out).decrypt(outer_ip(f))) for f in r.out["outside"])
    assert plain == [0, 1, 2, 3, 10]
    assert r.st.drops() == {"enc/sa-expired": 3}
    assert [(e["event"], e["reason"]) for e in ev["first"]] == [("soft-expired", "packets")]
    assert [(e["event"], e["reason"]) for e in ev["second"]] == [("hard-expired", "packets")]
    (info,) = ev["list"]
    assert info["state"] == "hard-expired" and info["drops"]["sa-expired"] == 3
    assert "soft-packets" in info["limits"] and "hard-packets" in info["limits"]


def test_lifetime_seconds_hard_expiry_drops(ring_name):
    """A hard lifetime in seconds stops the SA in the fast path (TSC deadline)."""
    inb = mk_sa(0x5400, "in", "aes-gcm-128", 4, 4, lifetime={"hard_seconds": 0.05})
    ssa = scapy_sa(inb)
    pkts = [eth() / ssa.encrypt(inner_pkt(i, 4)) for i in range(3)]
    ev: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        deadline = time.monotonic() + 10
        while not ev.get("e") and time.monotonic() < deadline:
            ev["e"] = dp.sa_events("dec")
            time.sleep(0.01)
        yield ("outside", pkts)

    r = run(gateway(dec=[inb]), ring_name, {"outside": []}, then=grab)
    assert [(e["event"], e["reason"]) for e in ev["e"]] == [("hard-expired", "seconds")]
    assert r.st.drops() == {"dec/sa-expired": 3}


# -- rekey ------------------------------------------------------------------------------
def test_rekey_overlap_loses_nothing(ring_name):
    """A new outbound SA with the same selectors takes the traffic at once;
    the old inbound SA keeps decrypting until it is removed, then its SPI is
    unknown, and both copies of its key are zero. pydp talks to itself:
    encrypt -> capture -> decrypt."""
    old_o = mk_sa(0x6000, "out", "aes-gcm-128", 4, 4)
    old_i = mk_sa(0x6000, "in", "aes-gcm-128", 4, 4)
    new_o = mk_sa(0x6001, "out", "chacha20-poly1305", 4, 4)
    new_i = mk_sa(0x6001, "in", "chacha20-poly1305", 4, 4)
    with Dataplane(gateway(), ports={"inside": ring_name(), "outside": ring_name()}) as dp:
        dp.start()
        dp.sa_add("enc", old_o)
        dp.sa_add("dec", old_i)
        dp.port("inside").inject([eth() / inner_pkt(i, 4) for i in range(5)])
        first = dp.port("outside").capture(count=5, timeout=5)
        dp.sa_add("dec", new_i)             # the peer learns the new SA first
        dp.sa_add("enc", new_o)
        dp.port("inside").inject([eth() / inner_pkt(10 + i, 4) for i in range(5)])
        second = dp.port("outside").capture(count=5, timeout=5)
        assert [outer_ip(f)[ESP].spi for f in first + second] == [0x6000] * 5 + [0x6001] * 5
        assert [s["spi"] for s in dp.sa_list("enc")] == [0x6001, 0x6000]   # newest first
        # both generations decrypt while they overlap
        dp.port("outside").inject(first + second)
        back = dp.port("inside").capture(count=10, timeout=5)
        assert sorted(pid(f) for f in back) == list(range(5)) + list(range(10, 15))
        dp.sa_remove("dec", 0x6000)
        dp.sa_remove("enc", 0x6000)
        assert [s["spi"] for s in dp.sa_list("dec")] == [0x6001]
        dp.port("outside").inject(first[:2])  # the old SPI is gone now
        assert dp.wait_rx(22) and dp.wait_idle(0.2)
        dp.stop()
        st = dp.stats()
        assert dp.pool.in_use() == 0
        assert any(new_o.key) and any(new_i.key)   # still installed
    assert st.drops() == {"dec/unknown-spi": 2}
    assert st.balanced()
    assert old_o.key == bytearray(20) and old_i.key == bytearray(20)
    assert new_o.key == bytearray(36) and new_i.key == bytearray(36)   # wiped at close


def test_rekey_under_running_traffic(ring_name, vdev_name):
    """Template traffic through encrypt -> decrypt in one pipeline while the
    SA pair is replaced 20 times: every packet sent arrives decrypted, and
    the generations together carried all of it."""
    from pydp import Source
    sas = [(mk_sa(0x7000 + g, "out", "aes-gcm-128", 4, 4), mk_sa(0x7000 + g, "in",
            "aes-gcm-128", 4, 4)) for g in range(21)]
    pl = Pipeline("loop", ports=["inside", "sink"], inputs={"inside": "p_in"}, stages=[
        Parse("p_in", next="enc"), EspEncrypt("enc", next="p_mid", sas=[sas[0][0]]),
        Parse("p_mid", next="dec"), EspDecrypt("dec", next="out", sas=[sas[0][1]]),
        Forward("out", port="sink")])
    n = 20000
    src = Source([eth() / inner_pkt(0, 4)], rate_pps=20000, count=n)
    carried = []
    with Dataplane(pl, ports={"inside": ring_name(), "sink": vdev_name("net_null")},
                   sources={"inside": src}) as dp:
        dp.start()
        g = 0
        while g < 20 and not dp.sources_done():
            g += 1
            dp.sa_add("dec", sas[g][1])
            dp.sa_add("enc", sas[g][0])   # from here the old SA gets nothing new
            time.sleep(0.02)
            # the old inbound SA decrypted what was in flight; it is removed now
            carried.append(next(s["packets"] for s in dp.sa_list("enc")
                                if s["spi"] == 0x7000 + g - 1))
            dp.sa_remove("enc", 0x7000 + g - 1)
            dp.sa_remove("dec", 0x7000 + g - 1)
        deadline = time.monotonic() + 30
        while not dp.sources_done() and time.monotonic() < deadline:
            time.sleep(0.01)
        dp.wait_idle(0.2, timeout=10)
        carried.append(dp.sa_list("enc")[0]["packets"])
        dp.stop()
        st = dp.stats()
        assert dp.pool.in_use() == 0
    assert st.drops() == {}, st.summary()
    assert st.stages()["out"]["in"] == n and st.ports()["sink"]["tx_packets"] == n
    assert sum(carried) == n
    assert sum(1 for c in carried if c) >= 3, carried   # traffic crossed several rekeys


# -- the shipped pipeline --------------------------------------------------------------------
def test_tunnel_gateway_yaml(ring_name):
    """pipelines/tunnel-gateway.yaml: cleartext in on inside leaves outside as
    ESP only (scapy decrypts it with the file's keys); the peer's ESP comes
    out on inside in clear; cleartext on outside never gets in."""
    pl = Pipeline.load(PIPELINES / "tunnel-gateway.yaml")
    enc = {s.spi: s for s in pl.stage("encrypt").sas}
    dec = {s.spi: s for s in pl.stage("decrypt").sas}
    clear = [eth() / IP(src="10.1.0.9", dst="10.2.3.4") / UDP(dport=53) / tag(i)
             for i in range(3)]
    clear += [eth() / IPv6(src="fd00:a::9", dst="fd00:b::4") / TCP(dport=443) / tag(10 + i)
              for i in range(3)]
    clear.append(eth() / IP(src="10.1.0.9", dst="8.8.8.8") / UDP() / tag(20))  # no SA
    s4, s6 = scapy_sa(dec[0x2001]), scapy_sa(dec[0x2002])
    peer = [eth() / s4.encrypt(IP(src="10.2.0.1", dst="10.1.0.1") / UDP() / tag(30 + i))
            for i in range(2)]
    peer += [eth() / s6.encrypt(IPv6(src="fd00:b::1", dst="fd00:a::1") / UDP() / tag(40 + i))
             for i in range(2)]
    peer.append(eth() / IP(src="10.2.0.1", dst="10.1.0.1") / UDP() / tag(50))  # cleartext
    r = run(pl, ring_name, {"inside": clear, "outside": peer})
    assert r.st.drops() == {"encrypt/no-sa": 1, "decrypt/not-esp": 1}
    got = []
    for f in r.out["outside"]:
        e = Ether(bytes(f))
        assert e.dst == "02:00:00:00:00:22" and e[IP].proto == 50
        got.append(pid(scapy_sa(enc[e[ESP].spi]).decrypt(e[IP])))
    assert sorted(got) == [0, 1, 2, 10, 11, 12]
    assert sorted(r.ids("inside")) == [30, 31, 40, 41]
    assert all(Ether(bytes(f)).dst == "02:00:00:00:00:11" for f in r.out["inside"])


# -- keys and bad input ------------------------------------------------------------------------
def test_key_never_shown(ring_name, capfd):
    """The key is not in repr/str, sa_list, sa_events, error messages or what
    the process writes (DPDK's log goes to stderr); a runtime SA's to_dict
    hides it; sa_remove zeroes it."""
    sa = mk_sa(0x8000, "out", "aes-gcm-256", 4, 4, lifetime={"soft_packets": 1})
    hexkey = bytes(sa.key).hex()
    texts = [repr(sa), str(sa), json.dumps(sa.to_dict()), str(sa.selectors)]
    bad = mk_sa(0x8001, "out", "aes-gcm-128", 4, 4)
    bad.key = bytearray(sa.key)  # 36 bytes for a 20-byte cipher
    with pytest.raises(ConfigError) as e:
        bad.validate()
    texts.append(str(e.value))
    with Dataplane(gateway(), ports={"inside": ring_name(), "outside": ring_name()}) as dp:
        dp.start()
        dp.sa_add("enc", sa)
        with pytest.raises(InvalidArgument) as e2:
            dp.sa_add("dec", sa)  # wrong direction for the stage
        texts.append(str(e2.value))
        dp.port("inside").inject([eth() / inner_pkt(1, 4)])
        dp.port("outside").capture(count=1, timeout=5)
        texts.append(json.dumps(dp.sa_list("enc")))
        texts.append(json.dumps(dp.sa_events("enc")))
        dp.sa_remove("enc", 0x8000)
        dp.stop()
    texts.extend(capfd.readouterr())
    for t in texts:
        assert hexkey not in t and hexkey[:16] not in t, t
    assert "36 bytes" in texts[4] and "key" in texts[4]
    assert sa.key == bytearray(36)


BAD = [
    ({"spi": 5}, "spi"),
    ({"spi": 2**32}, "spi"),
    ({"direction": "both"}, "direction"),
    ({"cipher": "aes-cbc"}, "cipher"),
    ({"key": b"\x01" * 16}, "key"),
    ({"key": "0xzz"}, "key"),
    ({"tunnel_src": "2001:db8::1"}, "tunnel_dst"),
    ({"tunnel_dst": "192.0.2.300"}, "tunnel_dst"),
    ({"selectors": []}, "selectors"),
    ({"selectors": [{"src": "10.0.0.0/8", "dst": "fd00::/8"}]}, "selectors"),
    ({"selectors": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8"},
                    {"src": "fd00::/8", "dst": "fd00::/8"}]}, "selectors"),
    ({"selectors": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8", "dport": "9-1"}]}, "selectors"),
    ({"selectors": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8", "proto": "bogus"}]},
     "selectors"),
    ({"selectors": [{"src": "10.0.0.0/8", "dstx": "10.0.0.0/8"}]}, "selectors"),
    ({"replay_window": 4097}, "replay_window"),
    ({"replay_window": -1}, "replay_window"),
    ({"esn": "yes"}, "esn"),
    ({"initial_seq": 2**32}, "initial_seq"),
    ({"ttl": 0}, "ttl"),
    ({"lifetime": {"soft_bytes": 10, "hard_bytes": 5}}, "lifetime"),
    ({"lifetime": {"hard_seconds": -1}}, "lifetime"),
]


@pytest.mark.parametrize("change,field", BAD, ids=[f for _, f in BAD])
def test_bad_sa_rejected_naming_the_field(change, field):
    d = {"spi": 0x9000, "direction": "out", "cipher": "aes-gcm-128",
         "key": "0x" + "ab" * 20, "tunnel_src": "192.0.2.1", "tunnel_dst": "192.0.2.2",
         "selectors": [{"src": "10.0.0.0/8", "dst": "10.0.0.0/8"}]}
    d.update(change)
    with pytest.raises(ConfigError) as e:
        SA.from_dict(d).validate()
    msg = str(e.value)
    assert f"{field}:" in msg or f"{field}[" in msg, msg
    assert "ab" * 8 not in msg


def test_bad_sa_in_yaml_names_file_line_and_key(tmp_path):
    text = (PIPELINES / "tunnel-gateway.yaml").read_text().replace(
        "        replay_window: 128", "        replay_window: 9999")
    f = tmp_path / "gw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        Pipeline.load(f)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "9999" in ln)
    assert str(e.value).startswith(f"{f}:{line}: ") and "replay_window" in str(e.value)
    unknown = text.replace("        replay_window: 9999", "        replay_windw: 64")
    f.write_text(unknown)
    with pytest.raises(ConfigError) as e:
        Pipeline.load(f)
    assert "replay_windw" in str(e.value)


def test_sa_add_errors(ring_name):
    """Duplicate SPI, unknown SPI on remove, a non-ESP stage, a cipher the
    forced device cannot do: each a clear typed error, nothing published."""
    from pydp import AlreadyExists, NotFound, NotSupported
    with Dataplane(gateway(crypto="openssl"), ports={"inside": ring_name(),
                                                     "outside": ring_name()}) as dp:
        dp.sa_add("enc", mk_sa(0x9100, "out", "aes-gcm-128", 4, 4))
        with pytest.raises(AlreadyExists, match="spi"):
            dp.sa_add("enc", mk_sa(0x9100, "out", "aes-gcm-256", 4, 4))
        with pytest.raises(NotSupported, match="chacha20-poly1305"):
            dp.sa_add("enc", mk_sa(0x9101, "out", "chacha20-poly1305", 4, 4))
        with pytest.raises(NotFound):
            dp.sa_remove("enc", 0x9999)
        with pytest.raises(InvalidArgument, match="not an ESP stage"):
            dp.sa_list("to_out")
        assert [s["spi"] for s in dp.sa_list("enc")] == [0x9100]
        assert dp.sa_list("enc")[0]["mode"] == "lookaside"


@pytest.mark.parametrize("crypto,ciphers", [
    ("aesni_mb", ("aes-gcm-128", "aes-gcm-256")), ("openssl", ("aes-gcm-128", "aes-gcm-256")),
    ("chacha20_poly1305", ("chacha20-poly1305", "chacha20-poly1305"))])
def test_other_crypto_devices_interoperate(ring_name, crypto, ciphers):
    """SAs through crypto_aesni_mb (CPU crypto), crypto_openssl (lookaside, the
    fallback) and crypto_chacha20_poly1305 (lookaside): scapy decrypts, pydp
    decrypts scapy."""
    out = mk_sa(0xA000, "out", ciphers[0], 6, 4)
    inb = mk_sa(0xA001, "in", ciphers[1], 4, 6)
    ssa = scapy_sa(inb)
    r = run(gateway([out], [inb], crypto=crypto), ring_name,
            {"inside": [eth() / inner_pkt(i, 6) for i in range(3)],
             "outside": [eth() / ssa.encrypt(inner_pkt(10 + i, 4)) for i in range(3)]})
    assert r.st.drops() == {}
    assert sorted(pid(scapy_sa(out).decrypt(outer_ip(f))) for f in r.out["outside"]) == [0, 1, 2]
    assert sorted(r.ids("inside")) == [10, 11, 12]


@pytest.mark.nosan
def test_tunnel_gateway_cli_pcap_and_tshark(tmp_path):
    """`pydp run pipelines/tunnel-gateway.yaml` with net_pcap ports: the tx pcap
    holds only ESP (tshark says so), and scapy decrypts it with the file's keys;
    a bad key in the file is one `pydp: error:` line naming the field."""
    from scapy.utils import rdpcap
    from test_cli import one_clear_line, pydp
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    clear = [eth() / IP(src="10.1.0.9", dst="10.2.3.4") / UDP(dport=53) / tag(i)
             for i in range(5)]
    wrpcap(str(tmp_path / "clear.pcap"), clear)
    for mode in ("--no-huge", None):   # the crypto vdevs start with 4 KiB pages too
        r = pydp("run", "pipelines/tunnel-gateway.yaml", "--port",
                 f"inside=net_pcap_esp0,rx_pcap={tmp_path}/clear.pcap", "--port",
                 f"outside=net_pcap_esp1,tx_pcap={tmp_path}/esp.pcap", "--until-idle", "--json",
                 *([mode] if mode else []))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["totals"]["tx"] == 5 and doc["totals"]["balanced"], doc
        sas = {a["spi_hex"]: a for a in doc["sas"]}   # the final per-SA counters
        assert sas["0x1001"]["packets"] == 5 and sas["0x2001"]["packets"] == 0
    res = subprocess.run(["tshark", "-r", str(tmp_path / "esp.pcap"), "-T", "fields",
                          "-e", "frame.protocols", "-e", "esp.spi"], capture_output=True,
                         text=True, timeout=60, check=True)
    rows = res.stdout.strip().splitlines()
    assert len(rows) == 5 and all(ln.split("\t")[0] == "eth:ethertype:ip:esp" for ln in rows)
    sa = Pipeline.load(PIPELINES / "tunnel-gateway.yaml").stage("encrypt").sas[0]
    got = [pid(scapy_sa(sa).decrypt(Ether(bytes(f))[IP])) for f in rdpcap(str(tmp_path /
                                                                            "esp.pcap"))]
    assert got == list(range(5))
    bad = tmp_path / "bad.yaml"
    bad.write_text((PIPELINES / "tunnel-gateway.yaml").read_text().replace(
        '"0x000102030405060708090a0b0c0d0e0f10111213"', '"0x0001020304"'))
    line = one_clear_line(pydp("check", str(bad)))
    assert "key: 5 bytes" in line and "000102" not in line


def test_spd_picks_sa_by_protocol_and_ports(ring_name):
    """Selectors with protocol and port ranges: TCP 443 into one SA, UDP 5000-5999
    into another, the rest of the prefix into a third; no match is no-sa.
    Ethernet padding is not encrypted; an ESP fragment is not-esp."""
    web = mk_sa(0xB001, "out", "aes-gcm-128", 4, 4, selectors=[
        {"src": "10.1.0.0/16", "dst": "10.2.0.0/16", "proto": "tcp", "dport": 443}])
    udp = mk_sa(0xB002, "out", "aes-gcm-256", 4, 4, selectors=[
        {"src": "10.1.0.0/16", "dst": "10.2.0.0/16", "proto": 17, "dport": "5000-5999"}])
    rest = mk_sa(0xB003, "out", "chacha20-poly1305", 4, 4, selectors=[
        {"src": "10.1.0.0/16", "dst": "10.2.0.0/16"}])
    # the SPD is newest first: add the catch-all first so it is consulted last
    pkts = [eth() / inner_pkt(0, 4, TCP(dport=443)), eth() / inner_pkt(1, 4, TCP(dport=80)),
            eth() / inner_pkt(2, 4, UDP(dport=5000)), eth() / inner_pkt(3, 4, UDP(dport=6000)),
            eth() / inner_pkt(4, 4, UDP(dport=5999)),
            eth() / inner_pkt(5, 4, src="10.9.0.1")]
    padded = eth() / inner_pkt(6, 4, UDP(dport=5001))
    pkts.append(Ether(bytes(padded) + b"\xee" * 20))       # padding after the IP packet
    inb = mk_sa(0xB100, "in", "aes-gcm-128", 4, 4)
    frag = eth() / scapy_sa(inb).encrypt(inner_pkt(9, 4))
    frag[IP].flags = "MF"
    del frag[IP].chksum
    r = run(gateway([rest, udp, web], [inb]), ring_name,
            {"inside": pkts, "outside": [Ether(bytes(frag))]})
    assert r.st.drops() == {"enc/no-sa": 1, "dec/not-esp": 1}
    by = {0xB001: web, 0xB002: udp, 0xB003: rest}
    got = {}
    for f in r.out["outside"]:
        o = outer_ip(f)
        spi = o[ESP].spi
        plain = scapy_sa(by[spi]).decrypt(o)
        got[pid(plain)] = (spi, bytes(plain))
    assert {k: v[0] for k, v in got.items()} == {0: 0xB001, 1: 0xB003, 2: 0xB002,
                                                 3: 0xB003, 4: 0xB002, 6: 0xB002}
    assert got[6][1] == bytes(padded[IP])                  # trimmed to the IP length


def test_control_socket_sas_and_no_keys(ring_name, tmp_path):
    """The control socket's `sas` command returns sa_list by stage (what `pydp
    tunnel show` reads); its `pipeline` dump hides even static keys."""
    from pydp.cli import serve_dataplane
    from pydp.control import call
    pl = Pipeline.load(PIPELINES / "tunnel-gateway.yaml")
    keys = [bytes(s.key).hex() for st in ("encrypt", "decrypt") for s in pl.stage(st).sas]
    sock = str(tmp_path / "c.sock")
    with Dataplane(pl, ports={"inside": ring_name(), "outside": ring_name()}) as dp:
        srv = serve_dataplane(dp, {}, sock)
        try:
            sas = call("sas", path=sock)
            doc = call("pipeline", path=sock)
        finally:
            srv.close()
    assert {k: [s["spi"] for s in v] for k, v in sas.items()} == {
        "encrypt": [0x1002, 0x1001], "decrypt": [0x2002, 0x2001]}
    text = json.dumps(sas) + json.dumps(doc)
    assert "<hidden>" in json.dumps(doc)
    for k in keys:
        assert k not in text and k[:12] not in text


def test_two_workers_share_an_outbound_sa(ring_name):
    """Two workers encrypt into one SA at once: every sequence number is used
    exactly once (rte_ipsec's atomic counter, the stage's CAS reservation)."""
    out = mk_sa(0xC000, "out", "aes-gcm-128", 4, 4)
    pl = gateway([out])
    devs = {"inside": ring_name(queues=2), "outside": ring_name(queues=2)}
    n = 400
    with Dataplane(pl, ports=devs, workers=2) as dp:
        dp.start()
        for q in (0, 1):
            assert dp.port("inside").inject([eth() / inner_pkt(q * 1000 + i, 4)
                                             for i in range(n)], queue=q) == n
        frames = dp.port("outside").capture(count=2 * n, timeout=10)
        dp.stop()
        st = dp.stats()
        assert dp.pool.in_use() == 0
    assert st.drops() == {} and len(frames) == 2 * n
    assert sorted(outer_ip(f)[ESP].seq for f in frames) == list(range(1, 2 * n + 1))
    ssa = scapy_sa(out)
    assert sorted(pid(ssa.decrypt(outer_ip(f))) for f in frames) == \
        list(range(n)) + list(range(1000, 1000 + n))


def test_lifetime_bytes_and_window_zero(ring_name):
    """Byte limits count inner IP bytes (soft: an event, hard: the SA stops);
    replay_window 0 turns anti-replay off (the same packet passes again)."""
    size = len(inner_pkt(0, 4))
    inb = mk_sa(0xD000, "in", "aes-gcm-128", 4, 4, replay_window=0,
                lifetime={"soft_bytes": 2 * size, "hard_bytes": 3 * size})
    ssa = scapy_sa(inb)
    one = eth() / ssa.encrypt(inner_pkt(7, 4))
    ev: dict = {}

    def grab(dp: Dataplane) -> Iterator[tuple[str, list]]:
        yield ("outside", [one])
        ev["e"] = dp.sa_events("dec")
        ev["l"] = dp.sa_list("dec")

    r = run(gateway(dec=[inb]), ring_name, {"outside": [one, one, one]}, then=grab)
    assert r.ids("inside") == [7, 7, 7]
    assert r.st.drops() == {"dec/sa-expired": 1}
    assert [(e["event"], e["reason"]) for e in ev["e"]] == [
        ("soft-expired", "bytes"), ("hard-expired", "bytes")]
    assert ev["l"][0]["bytes"] == 3 * size and ev["l"][0]["drops"]["sa-expired"] == 1


@pytest.mark.parametrize("inner,outer", COMBOS)
def test_dscp_and_ecn_across_the_tunnel(ring_name, inner, outer):
    """Encap copies DSCP and ECN out (RFC 4301, RFC 6040); decap keeps the inner
    DSCP and carries a CE mark in (the inner IPv4 checksum stays right)."""
    out = mk_sa(0xE000, "out", "aes-gcm-128", inner, outer)
    inb = mk_sa(0xE001, "in", "aes-gcm-128", inner, outer)
    p = inner_pkt(1, inner)
    setattr(p, "tos" if inner == 4 else "tc", 0xB9)         # DSCP 46, ECT(1)
    e = scapy_sa(inb).encrypt(p)
    setattr(e, "tos" if outer == 4 else "tc", 0x03)          # DSCP 0, CE on the way
    if outer == 4:
        del e.chksum
    r = run(gateway([out], [inb]), ring_name, {"inside": [eth() / p],
                                               "outside": [eth() / e]})
    assert r.st.drops() == {}
    o = outer_ip(r.out["outside"][0])
    assert (o.tos if outer == 4 else o.tc) == 0xB9
    got = Ether(bytes(r.out["inside"][0])).payload
    assert (got.tos if inner == 4 else got.tc) == 0xBB
    want = p.copy()
    setattr(want, "tos" if inner == 4 else "tc", 0xBB)
    if inner == 4:
        del want.chksum                                      # checksum fixed after the mark
    assert bytes(got) == bytes(want.__class__(bytes(want)))


def test_ipv6_outer_with_extension_header(ring_name):
    """ESP behind an IPv6 destination-options header decrypts: the parse stage's
    L4 offset is where ESP starts."""
    from scapy.layers.inet6 import IPv6ExtHdrDestOpt
    inb = mk_sa(0xF000, "in", "aes-gcm-256", 4, 6)
    e = scapy_sa(inb).encrypt(inner_pkt(3, 4))
    hdr = IPv6(src=inb.tunnel_src, dst=inb.tunnel_dst) / IPv6ExtHdrDestOpt()
    frame = eth() / hdr / e[ESP]
    assert IPv6ExtHdrDestOpt in Ether(bytes(frame))
    r = run(gateway(dec=[inb]), ring_name, {"outside": [frame]})
    assert r.st.drops() == {} and r.ids("inside") == [3]
