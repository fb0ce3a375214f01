"""Two tunnel managers over loopback UDP with in-memory SA tables.

The rekey tests check the overlap rule on the SA logs of both nodes: a node
only sends on an SPI after the other node installed it inbound, and the old
inbound SA stays until after the sender switched away from it.
"""

from __future__ import annotations

import json
import time

import pytest
from tunnel_util import Pki, free_udp_port

from pydp.tunnel import handshake as hs
from pydp.tunnel.manager import TunnelManager, hard_expired, rekey_due
from pydp.tunnel.sink import MemorySink

ENC, DEC = "esp_out", "esp_in"


def wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Pair:
    def __init__(self, pki, **extra):
        self.pki = pki
        p1, p2 = free_udp_port(), free_udp_port()
        self.s1, self.s2 = MemorySink(), MemorySink()
        self.m1 = TunnelManager(pki.config("n1", p1, {"n2": p2}, **extra), self.s1)
        self.m2 = TunnelManager(pki.config("n2", p2, {"n1": p1}, **extra), self.s2)
        self.m1.start()
        self.m2.start()

    def close(self):
        self.m1.close()
        self.m2.close()

    def up(self):
        assert self.m1.wait_up(timeout=10) and self.m2.wait_up(timeout=10)

    def gens(self):
        return len(self.m1.tunnels["n2"].gens), len(self.m2.tunnels["n1"].gens)


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


@pytest.fixture
def pair(pki):
    p = Pair(pki, grace=0.3)
    try:
        yield p
    finally:
        p.close()


def check_overlap(a: MemorySink, b: MemorySink, grace: float):
    """Every outbound SA of a was installed inbound at b first and removed there only after
    a had switched to a newer outbound SA (and the grace period had passed)."""
    adds_in = {spi: t for what, d, spi, t in b.log if what == "add" and d == "in"}
    rm_in = {spi: t for what, d, spi, t in b.log if what == "remove" and d == "in"}
    outs = [(spi, t) for what, d, spi, t in a.log if what == "add" and d == "out"]
    assert outs
    for i, (spi, t) in enumerate(outs):
        assert spi in adds_in and adds_in[spi] < t, f"{spi:#x} sent before installed"
        if spi in rm_in and i + 1 < len(outs):
            assert rm_in[spi] >= outs[i + 1][1] + grace * 0.9, f"{spi:#x} removed too early"


def test_up_over_udp_with_matching_keys_both_ways(pair):
    pair.up()
    assert pair.gens() == (1, 1)
    (o1,) = pair.s1.spis(ENC)
    (i1,) = pair.s1.spis(DEC)
    assert pair.s2.spis(DEC) == [o1] and pair.s2.spis(ENC) == [i1]
    a, b = pair.s1.sas[ENC][o1], pair.s2.sas[DEC][o1]
    assert a.key == b.key and a.cipher == b.cipher == "aes-gcm-128"
    assert pair.s1.sas[DEC][i1].key == pair.s2.sas[ENC][i1].key
    assert (a.tunnel_src, a.tunnel_dst) == ("192.0.2.1", "192.0.2.2")
    assert (b.tunnel_src, b.tunnel_dst) == ("192.0.2.1", "192.0.2.2")
    assert a.selectors == [{"src": "10.1.0.0/24", "dst": "10.2.0.0/24"}]
    assert b.selectors == [{"src": "10.1.0.0/24", "dst": "10.2.0.0/24"}]
    assert len(pair.s1.log) == 2  # one handshake only, even though both sides connect


def test_show_has_counters_and_lifetimes_but_no_keys(pair):
    pair.up()
    (o1,) = pair.s1.spis(ENC)
    pair.s1.traffic(o1, 7, 700)
    doc = pair.m1.show()
    text = json.dumps(doc)
    for sa in list(pair.s1.sas[ENC].values()) + list(pair.s1.sas[DEC].values()):
        assert bytes(sa.key.buffer()).hex() not in text
        assert repr(sa.key) not in text
    assert "key" not in {k for t in doc["tunnels"] for s in t["sas"] for k in s}
    (t,) = doc["tunnels"]
    assert t["peer"] == "n2" and t["state"] == "up"
    out = next(s for s in t["sas"] if s["direction"] == "out")
    assert out["spi"] == f"{o1:#010x}" and out["packets"] == 7 and out["bytes"] == 700
    assert out["lifetime"]["hard_seconds"] == 3600 and out["state"] == "active"
    r = repr(pair.s1.sas[ENC][o1])
    assert "key=" not in r and bytes(pair.s1.sas[ENC][o1].key.buffer()).hex() not in r


def test_rekey_by_packets_overlaps_and_wipes_old_keys(pki):
    pair = Pair(pki, grace=0.3, lifetime={"seconds": 3600, "packets": 1000})
    request_close = pair.close
    pair.up()
    (o1,) = pair.s1.spis(ENC)
    old = pair.s1.sas[ENC][o1]
    # the generation's initiator rekeys at 800 packets (80 %), its responder at 900
    pair.s1.traffic(o1, 799, 799 * 100)
    time.sleep(0.3)
    assert pair.gens() == (1, 1)  # below the soft limit: nothing happens
    pair.s1.traffic(o1, 101, 101 * 100)
    wait(lambda: pair.m1.tunnels["n2"].rekeys == 1 and pair.m2.tunnels["n1"].rekeys == 1,
         what="rekey")
    wait(lambda: pair.gens() == (1, 1), what="old generation retired")
    assert o1 not in pair.s1.spis(ENC) and old.key.wiped
    assert all(sa.key.wiped for sa in pair.s1.removed + pair.s2.removed)
    check_overlap(pair.s1, pair.s2, 0.3)
    check_overlap(pair.s2, pair.s1, 0.3)
    request_close()


def test_rekey_on_sequence_exhaustion_event(pair):
    pair.up()
    (i2,) = pair.s2.spis(DEC)
    pair.s2.event(DEC, i2, "seq-nearing-exhaustion")  # n2's inbound SA from n1 nears 2^32
    wait(lambda: pair.m2.tunnels["n1"].rekeys == 1, what="rekey")
    wait(lambda: pair.gens() == (1, 1), what="old generation retired")
    assert i2 not in pair.s2.spis(DEC)
    assert "data path: seq-nearing-exhaustion" in " ".join(pair.m2.show()["events"])
    check_overlap(pair.s1, pair.s2, 0.3)
    check_overlap(pair.s2, pair.s1, 0.3)


def test_time_lifetime_rekeys_repeatedly(pki):
    p = Pair(pki, grace=0.2, lifetime={"seconds": 1.0, "soft": 0.5})
    try:
        p.up()
        wait(lambda: p.m1.tunnels["n2"].rekeys >= 3, timeout=15, what="three rekeys")
        # never without an outbound SA on either side during all that
        check_overlap(p.s1, p.s2, 0.2)
        check_overlap(p.s2, p.s1, 0.2)
        assert all(sa.key.wiped for sa in p.s1.removed)
    finally:
        p.close()


def test_rotation_rehandshakes_and_keeps_the_tunnel(pair, pki):
    pair.up()
    old_serial = pair.m1.me.cert.serial_number
    pki.ca.issue("n1")  # a new key and certificate in the same files
    wait(lambda: pair.m1.rotations == 1, what="rotation picked up")
    wait(lambda: pair.m2.tunnels["n1"].gens and
         pair.m2.tunnels["n1"].gens[-1].keys.peer_cert.serial_number != old_serial,
         what="peer sees the new certificate")
    wait(lambda: pair.gens() == (1, 1), what="old generation retired")
    check_overlap(pair.s1, pair.s2, 0.3)
    check_overlap(pair.s2, pair.s1, 0.3)
    pki.ca.revoke(serial=f"{old_serial:x}")  # the old certificate dies: the tunnel does not
    time.sleep(0.5)
    assert pair.m2.tunnels["n1"].state == "up" and pair.gens() == (1, 1)


def test_revocation_tears_down_and_refuses(pki):
    # n2 ignores the CRL (as a compromised node would): n1 must cut it off on its own
    p1, p2 = free_udp_port(), free_udp_port()
    s1, s2 = MemorySink(), MemorySink()
    with TunnelManager(pki.config("n1", p1, {"n2": p2}, grace=0.3), s1) as m1, \
            TunnelManager(pki.config("n2", p2, {"n1": p1}, crl=None), s2) as m2:
        m1.start()
        m2.start()
        assert m1.wait_up(timeout=10) and m2.wait_up(timeout=10)
        pki.ca.revoke("n2")
        wait(lambda: not s1.spis(ENC) and not s1.spis(DEC), what="n1 tore down")
        t = m1.tunnels["n2"]
        assert t.state == "refused" and "revoked" in t.last_error
        assert s1.removed and all(sa.key.wiped for sa in s1.removed)
        # n2 comes back with its revoked certificate and is refused, with the reason
        m2.teardown("n1", "test")
        m2.tunnels["n1"].next_attempt = 0
        wait(lambda: "revoked" in (m2.tunnels["n1"].last_error or ""), what="n2 refused")
        assert "refused by n1: certificate of n2" in m2.tunnels["n1"].last_error
        assert not s1.spis(ENC) and not s1.spis(DEC)
        assert "refused init" in " ".join(m1.show()["events"])


def test_a_revoked_node_drops_its_own_tunnels(pair, pki):
    pair.up()
    pki.ca.revoke("n2")
    wait(lambda: not pair.s2.spis(ENC) and not pair.s2.spis(DEC), what="n2 tore down")
    assert "own certificate" in pair.m2.show()["identity_error"]
    time.sleep(1.0)
    assert not pair.s2.log[-1][0] == "add"  # and does not try again


def test_deny_tears_down(pair):
    pair.up()
    res = pair.m1.deny("n2")
    assert res == {"denied": "n2", "torn_down": ["n2"]}
    assert not pair.s1.spis(ENC) and "deny list" in pair.m1.tunnels["n2"].last_error


def test_unknown_ca_peer_is_refused_with_reason(pki, tmp_path):
    evil = Pki(tmp_path / "evil", nodes=("n2",))
    p1, p2 = free_udp_port(), free_udp_port()
    s1, s2 = MemorySink(), MemorySink()
    c2 = evil.config("n2", p2, {"n1": p1})
    with TunnelManager(pki.config("n1", p1, {"n2": p2}), s1) as m1, \
            TunnelManager(c2, s2) as m2:
        m1.start()
        m2.start()
        wait(lambda: "unknown CA" in (m1.tunnels["n2"].last_error or ""), what="refusal")
        wait(lambda: "unknown CA" in (m2.tunnels["n1"].last_error or ""), what="refusal")
        assert not s1.log and not s2.log


def test_unreachable_peer_backs_off(pki, monkeypatch):
    import pydp.tunnel.manager as mgr_mod
    monkeypatch.setattr(mgr_mod, "MAX_TRIES", 2)
    p1, p2 = free_udp_port(), free_udp_port()
    with TunnelManager(pki.config("n1", p1, {"n2": p2}), MemorySink()) as m1:
        m1.start()
        wait(lambda: "no answer from n2" in (m1.tunnels["n2"].last_error or ""),
             timeout=15, what="give up")
        assert m1.tunnels["n2"].state == "down"


def test_close_removes_everything_and_wipes(pair):
    pair.up()
    sas = list(pair.s1.sas[ENC].values()) + list(pair.s1.sas[DEC].values())
    pair.m1.close()
    assert not pair.s1.spis(ENC) and not pair.s1.spis(DEC)
    assert sas and all(sa.key.wiped for sa in sas)


def test_rekey_timing_rules():
    life = hs.Lifetime.from_hard(100, 10_000, 1000)  # soft at 80 %
    assert rekey_due("initiator", 79, 0, 0, life) is None
    assert rekey_due("initiator", 80, 0, 0, life) == "seconds"
    assert rekey_due("responder", 89, 0, 0, life) is None  # halfway between soft and hard
    assert rekey_due("responder", 90, 0, 0, life) == "seconds"
    assert rekey_due("initiator", 1, 800, 0, life) == "packets"
    assert rekey_due("initiator", 1, 0, 8000, life) == "bytes"
    assert rekey_due("responder", 1, 899, 8999, life) is None
    assert hard_expired(99, 999, 9999, life) is None
    assert hard_expired(100, 0, 0, life) == "seconds"
    assert hard_expired(0, 1000, 0, life) == "packets"
    assert rekey_due("initiator", 10**9, 10**9, 10**12, hs.Lifetime()) is None  # no limits


def test_lost_acks_keep_the_new_inbound_sa_until_the_next_rekey(pair, monkeypatch):
    pair.up()
    import pydp.tunnel.manager as mgr_mod
    monkeypatch.setattr(mgr_mod, "MAX_TRIES", 2)
    sent = pair.m2._send

    def drop_acks(data, addr):  # n2 answers, but its acks never arrive
        if not data.startswith(b'PDT1{"mac"') or b'"t":"ack"' not in data:
            sent(data, addr)
    pair.m2._send = drop_acks
    pair.m1.rekey("n2")
    wait(lambda: "no answer" in (pair.m1.tunnels["n2"].last_error or ""), what="rekey fails")
    # n2 switched to the new SAs; n1 keeps the new inbound SA, so n2's traffic still decrypts
    new_out_n2 = pair.m2.tunnels["n1"].current().keys.spi_out
    assert new_out_n2 in pair.s1.spis(DEC)
    assert pair.m1.tunnels["n2"].state == "up" and len(pair.m1.tunnels["n2"].gens) == 2
    pair.m2._send = sent
    pair.m1.rekey("n2")
    wait(lambda: pair.gens() == (1, 1) and pair.m1.tunnels["n2"].rekeys >= 1,
         what="clean rekey")
    assert new_out_n2 not in pair.s1.spis(DEC)


def test_config_needs_a_common_family_with_each_peer(pki):
    from pydp.errors import ConfigError
    with pytest.raises(ConfigError, match="peer n2: its subnets and this node's have no "
                       "address family in common"):
        pki.config("n1", 1, {"n2": 2}, subnets=["fd00:1::/64"])


def test_a_bad_new_certificate_is_not_used(pair, pki):
    import shutil
    pair.up()
    serial = pair.m1.me.cert.serial_number
    crt, key = pki.paths("n1")
    other_crt, other_key = pki.paths("n3")
    shutil.copy(other_key, key)  # a valid certificate, but of another node
    shutil.copy(other_crt, crt)
    wait(lambda: "not used" in " ".join(pair.m1.show()["events"]), what="refusal noted")
    assert pair.m1.me.cert.serial_number == serial and pair.m1.rotations == 0
    assert "wrong identity" in " ".join(pair.m1.show()["events"])
    assert pair.m1.tunnels["n2"].state == "up"


def test_a_data_path_event_during_a_failed_rekey_is_not_forgotten(pair, monkeypatch):
    import pydp.tunnel.manager as mgr_mod
    monkeypatch.setattr(mgr_mod, "MAX_TRIES", 1)
    pair.up()
    sent = pair.m2._send
    pair.m2._send = lambda data, addr: None  # n2 goes silent
    pair.m1.rekey("n2")
    (o1,) = pair.s1.spis(ENC)
    pair.s1.event(ENC, o1, "seq-nearing-exhaustion")  # arrives while that rekey is failing
    wait(lambda: "no answer" in (pair.m1.tunnels["n2"].last_error or ""), what="rekey fails")
    pair.m2._send = sent  # n2 is back: the remembered event starts a new rekey
    wait(lambda: pair.m1.tunnels["n2"].rekeys == 1, timeout=15, what="rekey on the event")
    assert "data path: seq-nearing-exhaustion" in " ".join(pair.m1.show()["events"])


def test_a_replayed_init_installs_nothing(pair):
    import socket
    pair.up()
    seen = []
    sent = pair.m1._send

    def tap(data, addr):
        if b'"t":"init"' in data:
            seen.append(data)
        sent(data, addr)
    pair.m1._send = tap
    pair.m1.rekey("n2")
    wait(lambda: pair.m1.tunnels["n2"].rekeys == 1 and seen, what="rekey")
    wait(lambda: pair.gens() == (1, 1), what="settled")
    adds = len(pair.s2.log)
    with pair.m2._lock:
        pair.m2._resp.clear()  # as after RESP_KEEP: only the replay cache remembers it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(seen[-1], pair.m2.cfg.listen)
    wait(lambda: "replayed handshake" in " ".join(pair.m2.show()["events"]), what="refusal")
    time.sleep(0.3)
    assert len(pair.s2.log) == adds and pair.gens() == (1, 1)
