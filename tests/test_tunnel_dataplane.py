"""The tunnel manager driving real ESP stages: two Dataplanes in this process.

n1's inside -> esp_encrypt -> outside ring; what comes out is ESP that scapy
decrypts with the handshake's keys, and that n2's esp_decrypt turns back into
the original packet. A rekey while packets flow loses none of them, and a
revocation removes the SAs from the data path (traffic then drops as no-sa).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from tunnel_util import Pki, free_udp_port

from pydp import Dataplane, Pipeline
from pydp.stages import EspDecrypt, EspEncrypt, Forward, Parse
from pydp.tunnel.config import TunnelConfig
from pydp.tunnel.manager import TunnelManager

SCAPY_ALGO = {"aes-gcm-128": "AES-GCM", "aes-gcm-256": "AES-GCM",
              "chacha20-poly1305": "CHACHA20-POLY1305"}


def gateway() -> Pipeline:
    return Pipeline("tn", ports=["inside", "outside"],
                    inputs={"inside": "p_in", "outside": "p_out"}, stages=[
                        Parse("p_in", next="esp_out"),
                        EspEncrypt("esp_out", next="to_out"),
                        Forward("to_out", port="outside", dst_mac="02:00:00:00:77:ff"),
                        Parse("p_out", next="esp_in"),
                        EspDecrypt("esp_in", next="to_in"),
                        Forward("to_in", port="inside", dst_mac="02:00:00:00:77:10")])


def pkt(i: int, src="10.1.0.5", dst="10.2.0.7"):
    return Ether(dst="02:00:00:00:77:fe") / IP(src=src, dst=dst) / UDP(sport=4000, dport=5000) \
        / Raw(b"id=%06d" % i)


def wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def two_nodes(eal, ring_name, tmp_path, **cfg):
    """Two Dataplanes (one worker lcore each) and their managers, up."""
    pki = Pki(tmp_path, nodes=("n1", "n2"))
    p1, p2 = free_udp_port(), free_udp_port()
    cfg.setdefault("grace", 0.5)
    dps = [Dataplane(gateway(), {"inside": ring_name(), "outside": ring_name()},
                     workers=[lc]) for lc in eal.workers[:2]]
    mgrs = []
    try:
        for dp in dps:
            dp.start()
        mgrs = [TunnelManager(pki.config("n1", p1, {"n2": p2}, **cfg), dps[0]),
                TunnelManager(pki.config("n2", p2, {"n1": p1}, **cfg), dps[1])]
        for m in mgrs:
            m.start()
        assert mgrs[0].wait_up(timeout=15) and mgrs[1].wait_up(timeout=15)
        yield pki, dps, mgrs
    finally:
        for m in mgrs:
            m.close()
        for dp in dps:
            dp.close()


@pytest.fixture
def nodes(eal, ring_name, tmp_path):
    with two_nodes(eal, ring_name, tmp_path) as n:
        yield n


def carry(dps, pkts):
    """Send pkts into n1's inside; hand n1's outside to n2's outside; return (esp, inner)."""
    dps[0].port("inside").inject(pkts)
    esp = dps[0].port("outside").capture(count=len(pkts), timeout=10)
    dps[1].port("outside").inject(esp)
    inner = dps[1].port("inside").capture(count=len(esp), timeout=10)
    return esp, inner


def test_handshake_sas_carry_traffic_and_scapy_agrees(nodes):
    pki, dps, mgrs = nodes
    esp, inner = carry(dps, [pkt(i) for i in range(20)])
    assert len(esp) == 20 and all(p.haslayer(ESP) for p in esp)
    assert {p[IP].src for p in esp} == {"192.0.2.1"} and {p[IP].dst for p in esp} == {"192.0.2.2"}
    assert [bytes(p[Raw].load) for p in inner] == [b"id=%06d" % i for i in range(20)]
    # an independent implementation decrypts it with the keys the handshake derived
    g = mgrs[0].tunnels["n2"].current()
    k = g.keys
    sa = SecurityAssociation(ESP, spi=k.spi_out, crypt_algo=SCAPY_ALGO[k.cipher],
                             crypt_key=bytes(k.key_out.buffer()),
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    assert esp[0][ESP].spi == k.spi_out
    clear = sa.decrypt(esp[0][IP].copy())
    assert clear[IP].src == "10.1.0.5" and bytes(clear[Raw].load) == b"id=000000"
    # counters reach tunnel show; keys never do
    doc = mgrs[0].show()
    out = next(s for s in doc["tunnels"][0]["sas"] if s["direction"] == "out")
    assert out["packets"] == 20
    assert bytes(k.key_out.buffer()).hex() not in repr(doc)
    assert not any("key" in s for s in dps[0].sa_list("esp_out"))


def test_rekey_while_traffic_flows_loses_nothing(nodes):
    pki, dps, mgrs = nodes
    old = mgrs[0].tunnels["n2"].current().keys.spi_out
    sent, got = 0, []
    mgrs[0].rekey("n2")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        batch = [pkt(sent + i) for i in range(10)]
        sent += 10
        esp, inner = carry(dps, batch)
        got += [bytes(p[Raw].load) for p in inner]
        t = mgrs[0].tunnels["n2"]
        if t.rekeys >= 1 and len(t.gens) == 1 and mgrs[1].tunnels["n1"].rekeys >= 1 \
                and len(mgrs[1].tunnels["n1"].gens) == 1:
            break
    assert mgrs[0].tunnels["n2"].rekeys >= 1
    new = mgrs[0].tunnels["n2"].current().keys.spi_out
    assert new != old
    esp, inner = carry(dps, [pkt(sent + i) for i in range(10)])
    sent += 10
    got += [bytes(p[Raw].load) for p in inner]
    assert {p[ESP].spi for p in esp} == {new}
    assert got == [b"id=%06d" % i for i in range(sent)]  # none lost, none reordered
    drops = dps[1].stats().stages()["esp_in"]["drops"]
    assert sum(drops.values()) == 0, drops
    assert [s["spi"] for s in dps[0].sa_list("esp_out")] == [new]


def test_revocation_removes_the_sas_from_the_data_path(nodes):
    pki, dps, mgrs = nodes
    pki.ca.revoke("n2")
    wait(lambda: not dps[0].sa_list("esp_out") and not dps[0].sa_list("esp_in"),
         what="n1's SAs removed")
    dps[0].port("inside").inject([pkt(i) for i in range(5)])
    wait(lambda: dps[0].stats().stages()["esp_out"]["drops"].get("no-sa", 0) == 5,
         what="no-sa drops")
    doc = mgrs[0].show()
    t = doc["tunnels"][0]
    assert t["state"] == "refused" and "revoked" in (t["last_error"] or ""), doc


@pytest.fixture
def short_nodes(eal, ring_name, tmp_path):
    """A 100-packet lifetime: the data path's soft-expired events rekey."""
    with two_nodes(eal, ring_name, tmp_path, grace=0.3,
                   lifetime={"seconds": 3600, "packets": 100}) as n:
        yield n


def test_packet_lifetime_rekeys_before_the_hard_limit(short_nodes):
    pki, dps, mgrs = short_nodes
    sent, got, spis = 0, [], set()
    while sent < 300:
        esp, inner = carry(dps, [pkt(sent + i) for i in range(10)])
        sent += 10
        got += [bytes(p[Raw].load) for p in inner]
        spis |= {p[ESP].spi for p in esp}
        time.sleep(0.1)  # the data path's soft-expired event reaches the manager
    assert got == [b"id=%06d" % i for i in range(sent)]
    assert len(spis) >= 3 and mgrs[0].tunnels["n2"].rekeys >= 2
    for dp in dps:
        drops = dp.stats().stages()
        assert sum(drops["esp_out"]["drops"].values()) == 0, drops["esp_out"]
        assert sum(drops["esp_in"]["drops"].values()) == 0, drops["esp_in"]


def test_rotation_under_traffic_keeps_the_tunnel(nodes):
    pki, dps, mgrs = nodes
    old = mgrs[1].tunnels["n1"].current().keys.peer_cert.serial_number
    pki.ca.issue("n1")
    sent, got = 0, []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        esp, inner = carry(dps, [pkt(sent + i) for i in range(10)])
        sent += 10
        got += [bytes(p[Raw].load) for p in inner]
        t = mgrs[1].tunnels["n1"]
        if mgrs[0].rotations == 1 and len(t.gens) == 1 and \
                t.gens[0].keys.peer_cert.serial_number != old:
            break
    assert mgrs[0].rotations == 1
    assert mgrs[1].tunnels["n1"].current().keys.peer_cert.serial_number != old
    assert got == [b"id=%06d" % i for i in range(sent)]


def test_sequence_nearing_exhaustion_rekeys(eal, ring_name, tmp_path, monkeypatch):
    import pydp.tunnel.manager as mgr_mod
    orig, first = mgr_mod.make_sa, []

    def near_the_end(sink, sa):  # n1's first outbound SA starts 700 short of 2^32
        obj = orig(sink, sa)
        if sa.direction == "out" and not first:
            first.append(sa.spi)
            obj.initial_seq, obj.seq_margin = 2**32 - 700, 500
        return obj
    monkeypatch.setattr(mgr_mod, "make_sa", near_the_end)
    with two_nodes(eal, ring_name, tmp_path) as (pki, dps, mgrs):
        owner = next(m for m in mgrs if any(g.keys.spi_out == first[0]
                                            for t in m.tunnels.values() for g in t.gens))
        src, dst = ("10.1.0.5", "10.2.0.7") if owner is mgrs[0] else ("10.2.0.7", "10.1.0.5")
        a, b = (dps[0], dps[1]) if owner is mgrs[0] else (dps[1], dps[0])
        sent, got = 0, []
        while sent < 500:
            a.port("inside").inject([pkt(sent + i, src, dst) for i in range(50)])
            esp = a.port("outside").capture(count=50, timeout=10)
            b.port("outside").inject(esp)
            got += [bytes(p[Raw].load) for p in b.port("inside").capture(count=50, timeout=10)]
            sent += 50
            time.sleep(0.1)
        assert got == [b"id=%06d" % i for i in range(sent)]
        ev = " ".join(owner.show()["events"])
        assert "data path: seq-nearing-exhaustion" in ev, ev
        assert first[0] not in [s["spi"] for s in a.sa_list("esp_out")]


def test_every_python_copy_of_a_removed_key_is_zeroed(eal, ring_name, tmp_path, monkeypatch):
    import pydp.tunnel.manager as mgr_mod
    orig, made = mgr_mod.make_sa, []

    def record(sink, sa):
        obj = orig(sink, sa)
        made.append((sa, obj))  # the manager's KeyMaterial and the pydp.esp.SA copy
        return obj
    monkeypatch.setattr(mgr_mod, "make_sa", record)
    with two_nodes(eal, ring_name, tmp_path, grace=0.2) as (pki, dps, mgrs):
        first = list(made)
        assert len(first) == 4 and all(any(o.key) for _, o in first)
        mgrs[0].rekey("n2")
        wait(lambda: all(len(m.tunnels[p].gens) == 1 and m.tunnels[p].rekeys == 1
                         for m, p in ((mgrs[0], "n2"), (mgrs[1], "n1"))), what="rekey done")
        for sa, obj in first:  # the old generation: removed from the data path, zeroed here
            assert sa.key.wiped and not any(obj.key), obj.spi
        live = made[4:]
        assert live and all(any(o.key) for _, o in live)
    for sa, obj in made:  # close() removed the rest
        assert sa.key.wiped and not any(obj.key)


def test_ipv6_inside_and_outside(eal, ring_name, tmp_path):
    from scapy.layers.inet6 import IPv6
    pki = Pki(tmp_path, nodes=("n1", "n2"))
    p1, p2 = free_udp_port(), free_udp_port()

    def cfg(me, other, pm, po, i, j):
        crt, key = pki.paths(me)
        return TunnelConfig.from_dict({
            "cert": str(crt), "key": str(key), "ca": str(tmp_path / "ca" / "ca.crt"),
            "listen": f"127.0.0.1:{pm}", "address": f"2001:db8::{i}",
            "subnets": [f"fd00:{i}::/64"], "ciphers": ["chacha20-poly1305"],
            "peers": [{"node": other, "endpoint": f"127.0.0.1:{po}",
                       "address": f"2001:db8::{j}", "subnets": [f"fd00:{j}::/64"]}]})
    dps = [Dataplane(gateway(), {"inside": ring_name(), "outside": ring_name()},
                     workers=[lc]) for lc in eal.workers[:2]]
    try:
        for dp in dps:
            dp.start()
        with TunnelManager(cfg("n1", "n2", p1, p2, 1, 2), dps[0]) as m1, \
                TunnelManager(cfg("n2", "n1", p2, p1, 2, 1), dps[1]) as m2:
            m1.start()
            m2.start()
            assert m1.wait_up(timeout=15) and m2.wait_up(timeout=15)
            pkts = [Ether(dst="02:00:00:00:77:fe") / IPv6(src="fd00:1::5", dst="fd00:2::7")
                    / UDP(sport=1, dport=2) / Raw(b"id=%06d" % i) for i in range(10)]
            esp, inner = carry(dps, pkts)
            assert {p[IPv6].dst for p in esp} == {"2001:db8::2"} and all(p.haslayer(ESP)
                                                                        for p in esp)
            assert [bytes(p[Raw].load) for p in inner] == [b"id=%06d" % i for i in range(10)]
            assert m1.show()["tunnels"][0]["sas"][0]["cipher"] == "chacha20-poly1305"
    finally:
        for dp in dps:
            dp.close()


def test_dual_stack_tunnel_carries_ipv4_and_ipv6_and_rekeys(eal, ring_name, tmp_path):
    from scapy.layers.inet6 import IPv6

    def mixed(base):
        return [pkt(base + i) if i % 2 == 0 else
                Ether(dst="02:00:00:00:77:fe") / IPv6(src="fd00:1::5", dst="fd00:2::7")
                / UDP(sport=1, dport=2) / Raw(b"id=%06d" % (base + i)) for i in range(10)]
    with two_nodes(eal, ring_name, tmp_path, grace=0.2, dual=True) as (pki, dps, mgrs):
        g = mgrs[0].tunnels["n2"].current()
        assert [p.family for p in g.keys.pairs] == [4, 6]
        assert len(dps[0].sa_list("esp_out")) == 2 and len(dps[0].sa_list("esp_in")) == 2
        sent, got = 0, []
        esp, inner = carry(dps, mixed(sent))
        sent += 10
        got += [bytes(p[Raw].load) for p in inner]
        assert {p[ESP].spi for p in esp} == {p.spi_out for p in g.keys.pairs}
        mgrs[1].rekey("n1")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, inner = carry(dps, mixed(sent))
            sent += 10
            got += [bytes(p[Raw].load) for p in inner]
            if all(len(m.tunnels[p].gens) == 1 and m.tunnels[p].rekeys == 1
                   for m, p in ((mgrs[0], "n2"), (mgrs[1], "n1"))):
                break
        assert mgrs[0].tunnels["n2"].rekeys == 1
        # nothing lost; each family in order (the ESP stages process a burst per SA, so
        # IPv4 and IPv6 packets of one burst may leave grouped by SA)
        assert sorted(got) == [b"id=%06d" % i for i in range(sent)]
        for parity in (0, 1):
            fam = [g for g in got if int(g[3:]) % 2 == parity]
            assert fam == sorted(fam)
        doc = mgrs[0].show()["tunnels"][0]["sas"]
        assert sorted((s["direction"], s["family"]) for s in doc) == \
            [("in", 4), ("in", 6), ("out", 4), ("out", 6)]
