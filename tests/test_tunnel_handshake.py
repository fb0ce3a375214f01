"""The handshake: matching SAs in both directions, and every refusal with its reason."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from tunnel_util import Pki

from pydp.tunnel import handshake as hs
from pydp.tunnel.ca import NodeIdentity, PeerRefused
from pydp.tunnel.keys import KeyMaterial, wipe_bytes

LIFE = hs.Lifetime.from_hard(60, 10**9, 10**6)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def run(pki, a="n1", b="n2", ini_id=None, resp_id=None, expect=None, ciphers=None,
        resp_ciphers=None, peers=None, tamper=None, fams=(4,), resp_fams=(4,)):
    """Run a whole handshake in memory; ``tamper(stage, msg_bytes) -> bytes``."""
    t = tamper or (lambda stage, m: m)
    ini = hs.Initiator(ini_id or pki.identity(a), pki.trust(), expect or b,
                       ciphers or list(hs.CIPHERS), LIFE, families=list(fams))
    m1 = t("init", ini.m1)
    r = hs.Responder(resp_id or pki.identity(b), pki.trust(), hs.decode(m1), m1,
                     peers if peers is not None else {a}, resp_ciphers or list(hs.CIPHERS),
                     hs.Lifetime.from_hard(30), hs.ReplayCache(),
                     families=lambda node: list(resp_fams))
    m3, ki = ini.on_resp(hs.decode(t("resp", r.m2)))
    m4, kr = r.on_fin(hs.decode(t("fin", m3)))
    ini.on_ack(hs.decode(t("ack", m4)))
    return ki, kr


@pytest.mark.parametrize("cipher,klen", [("aes-gcm-128", 20), ("aes-gcm-256", 36),
                                         ("chacha20-poly1305", 36)])
def test_both_directions_get_matching_keys_and_spis(pki, cipher, klen):
    ki, kr = run(pki, ciphers=[cipher])
    assert ki.cipher == kr.cipher == cipher
    assert ki.spi_out == kr.spi_in and ki.spi_in == kr.spi_out and ki.spi_in != ki.spi_out
    assert ki.spi_in >= 0x100 and ki.spi_out >= 0x100
    assert ki.key_out == kr.key_in and ki.key_in == kr.key_out
    assert ki.key_out != ki.key_in and len(ki.key_out) == klen  # key + 4-byte salt
    assert ki.peer == "n2" and kr.peer == "n1"
    # the stricter lifetime of the two proposals
    assert ki.lifetime == kr.lifetime and ki.lifetime.hard_seconds == 30
    assert ki.lifetime.hard_packets == 10**6
    ki2, _ = run(pki, ciphers=[cipher])
    assert ki2.key_out != ki.key_out and ki2.spi_out != ki.spi_out  # fresh every time


def test_responder_picks_its_preferred_common_cipher(pki):
    ki, _ = run(pki, ciphers=["aes-gcm-128", "chacha20-poly1305"],
                resp_ciphers=["chacha20-poly1305", "aes-gcm-256", "aes-gcm-128"])
    assert ki.cipher == "chacha20-poly1305"
    with pytest.raises(PeerRefused, match="no common cipher"):
        run(pki, ciphers=["aes-gcm-128"], resp_ciphers=["aes-gcm-256"])


def test_keys_never_shown(pki):
    ki, kr = run(pki)
    secret = bytes(ki.key_out.buffer())
    for text in (repr(ki), str(ki), repr(ki.key_out), str(kr.key_in)):
        assert secret.hex() not in text and "hidden" in text or "SessionKeys" in text
        assert secret not in text.encode()
    assert repr(ki.key_out) == f"<key {len(secret)} bytes hidden>"


def test_wipe_zeroes_key_material(pki):
    ki, kr = run(pki)
    buf = ki.key_out.buffer()
    assert any(buf)
    ki.wipe()
    assert not any(buf) and ki.key_out.wiped and ki.key_in.wiped
    assert repr(ki.key_in).endswith("wiped>")
    b = bytes(range(1, 33))
    km = KeyMaterial(b, wipe_source=True)
    assert b == bytes(32) and bytes(km.buffer()) == bytes(range(1, 33))
    src = bytearray(b"\x07" * 16)
    KeyMaterial(src, wipe_source=True)
    assert src == bytearray(16)
    one = b"\x01"
    wipe_bytes(one)  # interned singletons are left alone
    assert one == b"\x01"


def test_refuses_peer_from_another_ca(pki, tmp_path):
    other = Pki(tmp_path / "evil", nodes=("n1", "n2"))
    with pytest.raises(PeerRefused, match="unknown CA"):  # the responder refuses the initiator
        run(pki, ini_id=other.identity("n1"))
    with pytest.raises(PeerRefused, match="unknown CA"):  # the initiator refuses the responder
        run(pki, resp_id=other.identity("n2"))


def test_refuses_expired_peer(pki, tmp_path):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    crt, key = pki.ca.issue("n1", tmp_path / "exp", days=1, not_before=past)
    with pytest.raises(PeerRefused, match="certificate expired"):
        run(pki, ini_id=NodeIdentity.load(crt, key))


def test_refuses_revoked_peer(tmp_path):
    p = Pki(tmp_path, nodes=("n1", "n2"))
    run(p)
    p.ca.revoke("n1")
    with pytest.raises(PeerRefused, match="certificate of n1 .* is revoked"):
        run(p)


def test_refuses_wrong_identity(pki):
    # n1 wants n2 but reaches n3 (valid certificate, wrong node)
    with pytest.raises(PeerRefused, match="init is for 'n2', this node is n3"):
        run(pki, resp_id=pki.identity("n3"))
    # n3 claims to be n1
    with pytest.raises(PeerRefused, match="wrong identity"):
        run(pki, ini_id=pki.identity("n3"), tamper=lambda s, m: m.replace(b'"from":"n3"',
                                                                          b'"from":"n1"'))
    # a valid node that is not a configured peer
    with pytest.raises(PeerRefused, match="n3 is not a configured peer of n2"):
        run(pki, a="n3", peers={"n1"})
    # n3 answers an init meant for n2: the initiator checks who signed the resp
    with pytest.raises(PeerRefused, match="wrong identity: certificate is "
                       "spiffe://mesh.local/node/n3, expected spiffe://mesh.local/node/n2"):
        run(pki, resp_id=pki.identity("n3"),
            tamper=lambda s, m: m.replace(b'"to":"n2"', b'"to":"n3"') if s == "init" else m)


def _edit(m: bytes, fn) -> bytes:
    obj = json.loads(m[4:])
    fn(obj)
    return hs.encode(obj)


def _edit_body(m: bytes, key: str, value) -> bytes:
    def fn(obj):
        body = json.loads(base64.b64decode(obj["body"]))
        body[key] = value
        obj["body"] = base64.b64encode(json.dumps(body, sort_keys=True).encode()).decode()
    return _edit(m, fn)


def test_refuses_tampered_transcript(pki):
    # a man in the middle downgrades the offered ciphers: the responder's signature
    # covers H(init), so the initiator sees it
    with pytest.raises(PeerRefused, match="transcript tampered"):
        run(pki, tamper=lambda s, m: _edit(m, lambda o: o.update(ciphers=["aes-gcm-128"]))
            if s == "init" else m)
    # a changed lifetime inside the signed resp body
    with pytest.raises(PeerRefused, match="bad signature from n2"):
        run(pki, tamper=lambda s, m: _edit_body(m, "life", {"hard_seconds": 999999})
            if s == "resp" else m)
    # a swapped ephemeral key in resp
    with pytest.raises(PeerRefused, match="bad signature from n2"):
        run(pki, tamper=lambda s, m: _edit_body(m, "e", base64.b64encode(bytes(32)).decode())
            if s == "resp" else m)
    # a flipped signature byte in fin
    def flip(o):
        sig = bytearray(base64.b64decode(o["sig"]))
        sig[5] ^= 1
        o["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(PeerRefused, match="bad signature from n1"):
        run(pki, tamper=lambda s, m: _edit(m, flip) if s == "fin" else m)
    # a forged ack
    with pytest.raises(PeerRefused, match="bad ack MAC"):
        run(pki, tamper=lambda s, m: _edit(m, lambda o: o.update(
            mac=base64.b64encode(bytes(32)).decode())) if s == "ack" else m)


def test_refuses_replayed_and_stale_init(pki):
    ini = hs.Initiator(pki.identity("n1"), pki.trust(), "n2", ["aes-gcm-128"], LIFE)
    cache = hs.ReplayCache()
    args = (pki.identity("n2"), pki.trust())
    hs.Responder(*args, hs.decode(ini.m1), ini.m1, {"n1"}, ["aes-gcm-128"], LIFE, cache)
    with pytest.raises(PeerRefused, match="replayed handshake"):
        hs.Responder(*args, hs.decode(ini.m1), ini.m1, {"n1"}, ["aes-gcm-128"], LIFE, cache)
    stale = _edit(ini.m1, lambda o: o.update(ts=o["ts"] - 3600))
    with pytest.raises(PeerRefused, match="stale handshake"):
        hs.Responder(*args, hs.decode(stale), stale, {"n1"}, ["aes-gcm-128"], LIFE, cache)


def test_a_replayed_resp_cannot_complete_another_session(pki):
    a = hs.Initiator(pki.identity("n1"), pki.trust(), "n2", ["aes-gcm-128"], LIFE)
    r = hs.Responder(pki.identity("n2"), pki.trust(), hs.decode(a.m1), a.m1, {"n1"},
                     ["aes-gcm-128"], LIFE, hs.ReplayCache())
    b = hs.Initiator(pki.identity("n1"), pki.trust(), "n2", ["aes-gcm-128"], LIFE)
    with pytest.raises(PeerRefused, match="another session"):
        b.on_resp(hs.decode(r.m2))


def test_malformed_datagrams(pki):
    for junk in (b"", b"hello", b"PDT1{", b'PDT1{"t":"nope"}', b"PDT1" + b"x" * 9000):
        with pytest.raises(PeerRefused, match="malformed message"):
            hs.decode(junk)


def test_lifetime_agreement_takes_the_stricter_limit():
    a = hs.Lifetime.from_hard(60, 0, 1000)
    b = hs.Lifetime.from_hard(120, 5000, 0)
    c = a.agree(b)
    assert (c.hard_seconds, c.hard_bytes, c.hard_packets) == (60, 5000, 1000)
    assert (c.soft_seconds, c.soft_bytes, c.soft_packets) == (48, 4000, 800)


def test_mutated_messages_are_refused_never_crash(pki):
    """Every field of every message replaced by junk: PeerRefused or success, nothing else."""
    import random
    rnd = random.Random(5)
    junk = [None, 1, -1, 1.5, True, "", "zz", "AAAA", [], {}, "x" * 100,
            base64.b64encode(bytes(32)).decode(), base64.b64encode(bytes(64)).decode()]

    def mutate(m: bytes) -> bytes:
        obj = json.loads(m[4:])
        k = rnd.choice(sorted(obj))
        if k == "body" and rnd.random() < 0.7:
            body = json.loads(base64.b64decode(obj["body"]))
            body[rnd.choice(sorted(body))] = rnd.choice(junk)
            obj["body"] = base64.b64encode(json.dumps(body).encode()).decode()
        else:
            obj[k] = rnd.choice(junk)
        return hs.encode(obj)
    outcomes = set()
    for stage in ("init", "resp", "fin", "ack"):
        for _ in range(60):
            try:
                run(pki, tamper=lambda s, m, st=stage: mutate(m) if s == st else m)
                outcomes.add("ok")
            except PeerRefused:
                outcomes.add("refused")
    assert "refused" in outcomes


def test_one_sa_pair_per_common_inner_family(pki):
    ki, kr = run(pki, fams=(4, 6), resp_fams=(4, 6))
    assert [p.family for p in ki.pairs] == [4, 6] == [p.family for p in kr.pairs]
    for a, b in zip(ki.pairs, kr.pairs):
        assert a.spi_out == b.spi_in and a.spi_in == b.spi_out
        assert a.key_out == b.key_in and a.key_in == b.key_out
    spis = [x for p in ki.pairs for x in (p.spi_out, p.spi_in)]
    assert len(set(spis)) == 4
    assert ki.pairs[0].key_out != ki.pairs[1].key_out
    ki, _ = run(pki, fams=(4, 6), resp_fams=(6,))
    assert [p.family for p in ki.pairs] == [6]
    with pytest.raises(PeerRefused, match="no common inner address family"):
        run(pki, fams=(4,), resp_fams=(6,))
    # a man in the middle cannot strip a family: the resp signs over H(init)
    with pytest.raises(PeerRefused, match="transcript tampered"):
        run(pki, fams=(4, 6), resp_fams=(4, 6),
            tamper=lambda s, m: _edit(m, lambda o: o.update(fams=[4])) if s == "init" else m)
