"""The tunnel handshake: mutual certificate authentication, X25519, HKDF.

Four UDP datagrams on the control path (``PDT1`` + one JSON object)::

    I -> R  init  sid_i, from, to, ts, nonce_i, X25519 e_i, cert_i, ciphers, fams, lifetime
    R -> I  resp  body{sid_i, sid_r, from, to, nonce_r, e_r, cert_r, cipher, fams, lifetime,
                       H(init)}, sig_r, mac_r
    I -> R  fin   body{sid_i, sid_r, from, to}, sig_i, mac_i
    R -> I  ack   sid_i, sid_r, mac_a

- ``TH = SHA-256(init bytes || resp body bytes)`` is the transcript. It covers both
  nonces, both ephemeral public keys, both certificates, the chosen cipher and the
  lifetimes.
- ``sig_r = Ed25519_R("pydp-tunnel/1 resp" || H(init) || H(resp body))`` and
  ``sig_i = Ed25519_I("pydp-tunnel/1 fin" || TH || H(fin body))``: each side signs
  the transcript with its certificate's key, so a tampered byte anywhere fails.
- Keys: ``OKM = HKDF-SHA256(ikm = X25519(e_i, e_r), salt = nonce_i || nonce_r,
  info = "pydp-tunnel/1 keys" || TH || cipher)``, split, for each inner address
  family agreed in ``fams`` (4, 6; ascending), into the initiator->responder
  key+salt, the responder->initiator key+salt and the two SPIs (4 bytes each);
  then a 32-byte confirmation key. Both sides compute the same SPIs;
  ``mac_* = HMAC-SHA256(k_confirm, label || TH ...)`` proves each side holds the keys.
- Replay: an init older or newer than ``MAX_SKEW`` seconds is refused, and so is an
  init whose (sid_i, nonce_i) was already seen; a resp, fin or ack must match a
  live session's random ids and MACs. Fresh ephemeral keys per handshake give
  forward secrecy.

This module has no sockets and no clock of its own beyond ``time.time`` for the
init timestamp: :mod:`.manager` carries the datagrams.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .ca import NodeIdentity, PeerRefused, TrustStore
from .keys import KeyMaterial, wipe_bytes

MAGIC = b"PDT1"
MAX_SKEW = 60.0
SALT_LEN = 4
#: cipher -> key length in bytes (the 4-byte salt comes on top: RFC 4106 / RFC 7634)
CIPHERS: dict[str, int] = {"aes-gcm-128": 16, "aes-gcm-256": 32, "chacha20-poly1305": 32}
SPI_MIN = 0x100
MAX_DATAGRAM = 8192


@dataclass(frozen=True)
class Lifetime:
    """SA lifetimes; 0 means no limit. Soft triggers a rekey, hard ends the SA."""

    soft_seconds: float = 0
    hard_seconds: float = 0
    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0

    @classmethod
    def from_hard(cls, seconds: float = 0, bytes_: int = 0, packets: int = 0,
                  soft_fraction: float = 0.8) -> Lifetime:
        """Hard limits with soft ones at ``soft_fraction`` of each."""
        return cls(seconds * soft_fraction, seconds, int(bytes_ * soft_fraction), bytes_,
                   int(packets * soft_fraction), packets)

    def to_dict(self) -> dict[str, float]:
        """As a plain dict."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "lifetime") -> Lifetime:
        """From a dict with the field names; ValueError naming the field on bad values."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: not a mapping")
        out = {}
        for k in cls.__dataclass_fields__:
            v = d.get(k, 0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{where}.{k}: {v!r} is not a non-negative number")
            out[k] = v if k.endswith("seconds") else int(v)
        return cls(**out)

    def agree(self, other: Lifetime) -> Lifetime:
        """The stricter of two proposals: per field the smaller non-zero limit."""
        def lo(a: float, b: float) -> float:
            return min(a, b) if a and b else (a or b)
        return Lifetime(*(lo(getattr(self, k), getattr(other, k))
                          for k in self.__dataclass_fields__))


@dataclass
class SAPair:
    """The two SAs of one inner address family: SPIs and keys (never shown)."""

    family: int
    spi_out: int
    spi_in: int
    key_out: KeyMaterial = field(repr=False)
    key_in: KeyMaterial = field(repr=False)

    def wipe(self) -> None:
        """Zero both keys."""
        self.key_out.wipe()
        self.key_in.wipe()


@dataclass
class SessionKeys:
    """What a finished handshake gives one side: an SA pair per inner family, and the peer.

    Each key is the cipher key followed by the 4-byte salt (RFC 4106 / RFC 7634
    keying material). ``spi_out``/``spi_in``/``key_out``/``key_in`` are those of
    the first pair. Never shown by ``repr``.
    """

    peer: str
    role: str
    cipher: str
    pairs: list[SAPair]
    lifetime: Lifetime
    peer_cert: x509.Certificate = field(repr=False)

    @property
    def spi_out(self) -> int:
        """The first pair's outbound SPI."""
        return self.pairs[0].spi_out

    @property
    def spi_in(self) -> int:
        """The first pair's inbound SPI."""
        return self.pairs[0].spi_in

    @property
    def key_out(self) -> KeyMaterial:
        """The first pair's outbound key."""
        return self.pairs[0].key_out

    @property
    def key_in(self) -> KeyMaterial:
        """The first pair's inbound key."""
        return self.pairs[0].key_in

    def spis_in(self) -> list[int]:
        """Every inbound SPI."""
        return [p.spi_in for p in self.pairs]

    def wipe(self) -> None:
        """Zero every key."""
        for p in self.pairs:
            p.wipe()


# -- encoding --------------------------------------------------------------------------
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(v: Any, what: str, n: int | None = None) -> bytes:
    if not isinstance(v, str):
        raise PeerRefused(f"malformed message: {what} missing")
    try:
        b = base64.b64decode(v, validate=True)
    except ValueError:
        raise PeerRefused(f"malformed message: {what} is not base64") from None
    if n is not None and len(b) != n:
        raise PeerRefused(f"malformed message: {what} has {len(b)} bytes, not {n}")
    return b


def encode(obj: dict[str, Any]) -> bytes:
    """One datagram: ``PDT1`` + compact JSON."""
    return MAGIC + json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Parse a datagram; PeerRefused('malformed message: ...') when it is not one of ours."""
    if len(data) > MAX_DATAGRAM or not data.startswith(MAGIC):
        raise PeerRefused("malformed message: not a pydp tunnel datagram")
    try:
        obj = json.loads(data[len(MAGIC):])
    except ValueError:
        raise PeerRefused("malformed message: bad JSON") from None
    if not isinstance(obj, dict) or obj.get("t") not in ("init", "resp", "fin", "ack", "refuse"):
        raise PeerRefused("malformed message: unknown type")
    return obj


def _body(msg: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    raw = _unb64(msg.get("body"), "body")
    try:
        body = json.loads(raw)
    except ValueError:
        raise PeerRefused("malformed message: bad body") from None
    if not isinstance(body, dict):
        raise PeerRefused("malformed message: bad body")
    return raw, body


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def _mac(key: KeyMaterial, *parts: bytes) -> bytes:
    return hmac.new(key.buffer(), b"".join(parts), hashlib.sha256).digest()


def _pub(k: x25519.X25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _verify_sig(cert: x509.Certificate, sig: bytes, data: bytes, who: str) -> None:
    try:
        cert.public_key().verify(sig, data)  # type: ignore[call-arg]
    except InvalidSignature:
        raise PeerRefused(f"bad signature from {who}: transcript tampered or wrong key") \
            from None


def _spi(b: bytes) -> int:
    return SPI_MIN + int.from_bytes(b, "big") % (2**32 - SPI_MIN)


@dataclass
class Derived:
    """HKDF output, by inner family: (key_i2r, key_r2i, spi_i2r, spi_r2i); and k_confirm."""

    by_family: dict[int, tuple[KeyMaterial, KeyMaterial, int, int]]
    confirm: KeyMaterial

    def wipe(self) -> None:
        """Zero everything."""
        for a, b, _, _ in self.by_family.values():
            a.wipe()
            b.wipe()
        self.confirm.wipe()

    def spis(self) -> list[int]:
        """Every SPI, both directions, every family."""
        return [x for _, _, i, r in self.by_family.values() for x in (i, r)]

    def session(self, peer: str, role: str, cipher: str, life: Lifetime,
                cert: x509.Certificate) -> SessionKeys:
        """The SessionKeys of ``role`` (initiator: out = i2r; responder: out = r2i)."""
        ini = role == "initiator"
        pairs = [SAPair(f, i if ini else r, r if ini else i, a if ini else b, b if ini else a)
                 for f, (a, b, i, r) in sorted(self.by_family.items())]
        return SessionKeys(peer, role, cipher, pairs, life, cert)


def derive(shared: bytes, nonce_i: bytes, nonce_r: bytes, th: bytes, cipher: str,
           families: list[int]) -> Derived:
    """HKDF the X25519 secret into an SA pair per inner family and a confirmation key.

    Per family (in ascending order): key_i2r+salt, key_r2i+salt, spi_i2r, spi_r2i;
    then 32 bytes of k_confirm. The caller's ``shared`` is zeroed; so is the HKDF
    output once split.
    """
    klen = CIPHERS[cipher] + SALT_LEN
    fams = sorted(set(families))
    per = 2 * klen + 8
    okm = HKDF(algorithm=hashes.SHA256(), length=len(fams) * per + 32,
               salt=nonce_i + nonce_r,
               info=b"pydp-tunnel/1 keys" + th + cipher.encode()).derive(shared)
    wipe_bytes(shared)
    km = KeyMaterial(okm, wipe_source=True)
    b = km.buffer()
    out = {}
    for n, f in enumerate(fams):
        o = n * per
        out[f] = (KeyMaterial(b[o:o + klen]), KeyMaterial(b[o + klen:o + 2 * klen]),
                  _spi(bytes(b[o + 2 * klen:o + 2 * klen + 4])),
                  _spi(bytes(b[o + 2 * klen + 4:o + per])))
    d = Derived(out, KeyMaterial(b[len(fams) * per:]))
    km.wipe()
    return d


def _families(v: Any) -> list[int]:
    if not isinstance(v, list) or not v or any(f not in (4, 6) for f in v) \
            or len(set(v)) != len(v):
        raise PeerRefused("malformed message: fams")
    return sorted(v)


def _exchange(priv: x25519.X25519PrivateKey, peer_pub: bytes) -> bytes:
    try:
        return priv.exchange(x25519.X25519PublicKey.from_public_bytes(peer_pub))
    except ValueError:
        raise PeerRefused("bad X25519 public key (low order point)") from None


# -- replay protection for init ------------------------------------------------------------
class ReplayCache:
    """(sid, nonce) of every init seen in the last ``2 * MAX_SKEW`` seconds."""

    def __init__(self, skew: float = MAX_SKEW) -> None:
        """An empty cache accepting timestamps within ``skew`` seconds of now."""
        self.skew = skew
        self._seen: dict[bytes, float] = {}

    def check(self, key: bytes, ts: Any, now: float | None = None) -> None:
        """Refuse a stale, future or repeated init; remember a fresh one."""
        t = time.time() if now is None else now
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or abs(t - ts) > self.skew:
            raise PeerRefused(f"replayed or stale handshake: timestamp is more than "
                              f"{self.skew:g} s from now")
        for k, seen in list(self._seen.items()):
            if t - seen > 2 * self.skew:
                del self._seen[k]
        if key in self._seen:
            raise PeerRefused("replayed handshake: this init was already seen")
        self._seen[key] = t


# -- the two roles ------------------------------------------------------------------------
class Initiator:
    """The side that opens a handshake to ``peer``."""

    def __init__(self, me: NodeIdentity, trust: TrustStore, peer: str,
                 ciphers: list[str], lifetime: Lifetime,
                 spi_taken: Any = lambda spi: False, families: list[int] = (4,)) -> None:
        """Prepare a fresh ephemeral key, nonce and session id.

        ``families``: the inner address families (4, 6) to make SA pairs for.
        """
        self.me, self.trust, self.peer = me, trust, peer
        self.families = sorted(set(families))
        self.ciphers = list(ciphers)
        self.lifetime = lifetime
        self.sid = os.urandom(8)
        self._nonce = os.urandom(32)
        self._eph: x25519.X25519PrivateKey | None = x25519.X25519PrivateKey.generate()
        self._spi_taken = spi_taken
        self.m1 = encode({
            "t": "init", "v": 1, "sid": self.sid.hex(), "from": me.node, "to": peer,
            "ts": time.time(), "n": _b64(self._nonce), "e": _b64(_pub(self._eph)),
            "cert": _b64(me.cert_der()), "ciphers": self.ciphers, "fams": self.families,
            "life": lifetime.to_dict()})
        self.m3: bytes | None = None
        self.keys: SessionKeys | None = None
        self._th = b""
        self._confirm: KeyMaterial | None = None
        self.sid_r = b""

    def __repr__(self) -> str:
        return f"Initiator({self.me.node}->{self.peer}, sid={self.sid.hex()})"

    def on_resp(self, msg: dict[str, Any]) -> tuple[bytes, SessionKeys]:
        """Check the responder (certificate, signature, MAC); return (fin datagram, keys)."""
        if self.keys is not None and self.m3 is not None:
            return self.m3, self.keys  # a retransmitted resp: same answer
        raw, body = _body(msg)
        if body.get("sid_i") != self.sid.hex():
            raise PeerRefused("resp for another session")
        cert_der = _unb64(body.get("cert"), "cert")
        node = self.trust.verify(cert_der, expect=self.peer)
        if body.get("from") != self.peer or body.get("to") != self.me.node:
            raise PeerRefused(f"resp names {body.get('from')!r}->{body.get('to')!r}, expected "
                              f"{self.peer}->{self.me.node}")
        if body.get("h1") != _b64(_h(self.m1)):
            raise PeerRefused(f"bad signature from {self.peer}: transcript tampered "
                              "(init hash differs)")
        cert = x509.load_der_x509_certificate(cert_der)
        _verify_sig(cert, _unb64(msg.get("sig"), "sig", 64),
                    b"pydp-tunnel/1 resp" + _h(self.m1) + _h(raw), node)
        cipher = body.get("cipher")
        if cipher not in self.ciphers:
            raise PeerRefused(f"{node} chose cipher {cipher!r}, not one we offered")
        try:
            life = Lifetime.from_dict(body.get("life") or {}, "life")
        except ValueError as e:
            raise PeerRefused(f"malformed message: {e}") from None
        n_r = _unb64(body.get("n"), "nonce", 32)
        e_r = _unb64(body.get("e"), "e", 32)
        try:
            sid_r = bytes.fromhex(str(body.get("sid_r", "")))
        except ValueError:
            raise PeerRefused("malformed message: sid_r") from None
        fams = _families(body.get("fams"))
        if any(f not in self.families for f in fams):
            raise PeerRefused(f"{node} chose families {fams}, we offered {self.families}")
        self._th = _h(self.m1, raw)
        assert self._eph is not None
        d = derive(_exchange(self._eph, e_r), self._nonce, n_r, self._th, cipher, fams)
        if not hmac.compare_digest(_mac(d.confirm, b"resp", self._th),
                                   _unb64(msg.get("mac"), "mac", 32)):
            d.wipe()
            raise PeerRefused(f"bad key confirmation from {node}")
        if len(set(d.spis())) != len(d.spis()) or \
                any(self._spi_taken(r) for _, _, _, r in d.by_family.values()):
            d.wipe()
            raise PeerRefused("SPI collision, retry the handshake")
        self._eph = None  # forward secrecy: the ephemeral key is gone
        confirm = d.confirm
        self._confirm, self.sid_r = confirm, sid_r
        raw3 = json.dumps({"sid_i": self.sid.hex(), "sid_r": sid_r.hex(), "from": self.me.node,
                           "to": self.peer}, sort_keys=True).encode()
        self.m3 = encode({
            "t": "fin", "body": _b64(raw3),
            "sig": _b64(self.me.sign(b"pydp-tunnel/1 fin" + self._th + _h(raw3))),
            "mac": _b64(_mac(confirm, b"fin", self._th, _h(raw3)))})
        self.keys = d.session(node, "initiator", cipher, life, cert)
        return self.m3, self.keys

    def on_ack(self, msg: dict[str, Any]) -> None:
        """Check the responder's ack (it installed its SAs); PeerRefused if it is forged."""
        if self._confirm is None:
            raise PeerRefused("ack before resp")
        if msg.get("sid_i") != self.sid.hex() or msg.get("sid_r") != self.sid_r.hex():
            raise PeerRefused("ack for another session")
        if not hmac.compare_digest(_mac(self._confirm, b"ack", self._th),
                                   _unb64(msg.get("mac"), "mac", 32)):
            raise PeerRefused(f"bad ack MAC from {self.peer}")

    def close(self) -> None:
        """Drop the ephemeral key and wipe the confirmation key."""
        self._eph = None
        if self._confirm is not None:
            self._confirm.wipe()


class Responder:
    """The side that answers an init."""

    def __init__(self, me: NodeIdentity, trust: TrustStore, msg: dict[str, Any], raw: bytes,
                 peers: Any, ciphers: list[str], lifetime: Lifetime, replay: ReplayCache,
                 spi_taken: Any = lambda spi: False,
                 families: Any = lambda node: [4]) -> None:
        """Check an init and prepare the resp (:attr:`m2`); PeerRefused(reason) on refusal.

        ``peers``: node id -> truthy when that node may connect (a dict or set).
        ``families(node)``: the inner families this side carries with that node.
        """
        self.me, self.trust = me, trust
        if msg.get("v") != 1:
            raise PeerRefused(f"unsupported handshake version {msg.get('v')!r}")
        if msg.get("to") != me.node:
            raise PeerRefused(f"init is for {msg.get('to')!r}, this node is {me.node}")
        try:
            self.sid_i = bytes.fromhex(str(msg.get("sid")))
        except ValueError:
            raise PeerRefused("malformed message: sid") from None
        n_i = _unb64(msg.get("n"), "nonce", 32)
        e_i = _unb64(msg.get("e"), "e", 32)
        cert_der = _unb64(msg.get("cert"), "cert")
        claimed = msg.get("from")
        node = trust.verify(cert_der, expect=claimed if isinstance(claimed, str) else "")
        if node not in peers:
            raise PeerRefused(f"node {node} is not a configured peer of {me.node}")
        replay.check(self.sid_i + n_i, msg.get("ts"))
        offered = msg.get("ciphers")
        if not isinstance(offered, list):
            raise PeerRefused("malformed message: ciphers")
        cipher = next((c for c in ciphers if c in offered), None)
        if cipher is None:
            raise PeerRefused(f"no common cipher (offered {offered}, accepted {ciphers})")
        try:
            life = lifetime.agree(Lifetime.from_dict(msg.get("life") or {}, "life"))
        except ValueError as e:
            raise PeerRefused(f"malformed message: {e}") from None
        mine = families(node)
        fams = [f for f in _families(msg.get("fams")) if f in mine]
        if not fams:
            raise PeerRefused(f"no common inner address family (offered "
                              f"{msg.get('fams')}, {me.node} carries {mine} for {node})")
        self.peer, self.cipher, self.lifetime = node, cipher, life
        self.peer_cert = x509.load_der_x509_certificate(cert_der)
        self.sid_r = os.urandom(8)
        n_r = os.urandom(32)
        eph = x25519.X25519PrivateKey.generate()
        raw2 = json.dumps({
            "sid_i": self.sid_i.hex(), "sid_r": self.sid_r.hex(), "from": me.node, "to": node,
            "n": _b64(n_r), "e": _b64(_pub(eph)), "cert": _b64(me.cert_der()),
            "cipher": cipher, "fams": fams, "life": life.to_dict(), "h1": _b64(_h(raw))},
            sort_keys=True).encode()
        self._th = _h(raw, raw2)
        d = derive(_exchange(eph, e_i), n_i, n_r, self._th, cipher, fams)
        del eph
        if len(set(d.spis())) != len(d.spis()) or \
                any(spi_taken(i) for _, _, i, _ in d.by_family.values()):
            d.wipe()
            raise PeerRefused("SPI collision, retry the handshake")
        confirm = d.confirm
        self._confirm = confirm
        self._keys = d.session(node, "responder", cipher, life, self.peer_cert)
        self.m2 = encode({
            "t": "resp", "body": _b64(raw2),
            "sig": _b64(me.sign(b"pydp-tunnel/1 resp" + _h(raw) + _h(raw2))),
            "mac": _b64(_mac(confirm, b"resp", self._th))})
        self.m4: bytes | None = None

    def __repr__(self) -> str:
        return f"Responder({self.peer}->{self.me.node}, sid={self.sid_i.hex()})"

    def on_fin(self, msg: dict[str, Any]) -> tuple[bytes, SessionKeys]:
        """Check the initiator's signature and MAC; return (ack datagram, keys)."""
        if self.m4 is not None:
            return self.m4, self._keys  # a retransmitted fin: same answer
        raw3, body = _body(msg)
        if body.get("sid_i") != self.sid_i.hex() or body.get("sid_r") != self.sid_r.hex():
            raise PeerRefused("fin for another session")
        if body.get("from") != self.peer or body.get("to") != self.me.node:
            raise PeerRefused("fin names the wrong nodes")
        _verify_sig(self.peer_cert, _unb64(msg.get("sig"), "sig", 64),
                    b"pydp-tunnel/1 fin" + self._th + _h(raw3), self.peer)
        if not hmac.compare_digest(_mac(self._confirm, b"fin", self._th, _h(raw3)),
                                   _unb64(msg.get("mac"), "mac", 32)):
            raise PeerRefused(f"bad key confirmation from {self.peer}")
        self.m4 = encode({"t": "ack", "sid_i": self.sid_i.hex(), "sid_r": self.sid_r.hex(),
                          "mac": _b64(_mac(self._confirm, b"ack", self._th))})
        return self.m4, self._keys

    def close(self) -> None:
        """Wipe the confirmation key (and the keys, if they were never taken)."""
        self._confirm.wipe()
        if self.m4 is None:
            self._keys.wipe()


def refusal(sid: str, reason: str) -> bytes:
    """An (unauthenticated, informational) refusal datagram."""
    return encode({"t": "refuse", "sid": sid, "reason": reason[:300]})
