"""IPsec ESP security associations: the Python side of the ESP stages.

An :class:`SA` describes one direction of an ESP tunnel (RFC 4303, tunnel
mode) with an AEAD cipher (AES-GCM, RFC 4106; ChaCha20-Poly1305, RFC 7634).
The C core builds it on DPDK's rte_ipsec and rte_cryptodev; this module
validates SAs, pushes them into a running pipeline and reads them back::

    sa = SA(spi=0x1001, direction="out", cipher="aes-gcm-128", key=key20,
            tunnel_src="192.0.2.1", tunnel_dst="192.0.2.2",
            selectors=[{"src": "10.1.0.0/16", "dst": "10.2.0.0/16"}])
    dp.sa_add("encrypt", sa)        # newest SA for its selectors wins at once
    dp.sa_list("encrypt")           # counters and lifetimes, never keys
    dp.sa_events("encrypt")         # soft/hard expiry, sequence exhaustion
    dp.sa_remove("encrypt", 0x1001) # unpublished, then wiped in C and here

``tunnel_src`` / ``tunnel_dst`` are the outer addresses as they appear on
the wire in that SA's direction: for an inbound SA, ``tunnel_src`` is the
peer. ``key`` is the RFC 4106/7634 keying material: the cipher key followed
by the 4-byte salt (20 bytes for aes-gcm-128, 36 for aes-gcm-256 and
chacha20-poly1305). It is never shown: not in ``repr``, not in
:func:`sa_list`, not in error messages. The SA keeps its own ``bytearray``
copy (zeroed by :func:`sa_remove`, and by ``Dataplane.close()`` for every SA
it was given); a ``bytes`` object the caller passed
cannot be wiped by pydp and stays the caller's to drop. In C the key lives
only in the cryptodev session (cleared by the PMD when the SA is removed)
and, for the duration of the add, in a config struct that is zeroed.

One SA carries one inner family: its selectors are all IPv4 or all IPv6
(rte_ipsec fixes the ESP next header per SA). A tunnel carrying both
families uses one SA pair per family, with distinct SPIs.

Multiple workers: an outbound SA may be shared (atomic sequence numbers);
an inbound SA's replay window has one writer, so its packets must reach
one rx queue (RSS on the outer addresses keeps an SA on one queue).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._core import check, cstr, ffi, lib
from .errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    from .runtime import Dataplane

#: cipher name -> (C constant, cipher key bytes)
CIPHERS: dict[str, tuple[int, int]] = {
    "aes-gcm-128": (lib.PD_ESP_AES_GCM_128, 16),
    "aes-gcm-256": (lib.PD_ESP_AES_GCM_256, 32),
    "chacha20-poly1305": (lib.PD_ESP_CHACHA20_POLY1305, 32),
}
CIPHER_NAMES = {v[0]: k for k, v in CIPHERS.items()}
#: crypto device choices of an ESP stage (``crypto:``)
CRYPTO_DEVICES: dict[str, int] = {
    "auto": lib.PD_ESP_DEV_AUTO, "aesni_gcm": lib.PD_ESP_DEV_AESNI_GCM,
    "aesni_mb": lib.PD_ESP_DEV_AESNI_MB, "chacha20_poly1305": lib.PD_ESP_DEV_CHACHA,
    "openssl": lib.PD_ESP_DEV_OPENSSL,
}
MAX_WINDOW = lib.PD_ESP_MAX_WINDOW
MAX_SELECTORS = lib.PD_ESP_MAX_SEL
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "gre": 47}
_FLAGS = [  # (C flag, event, reason)
    (lib.PD_ESP_F_SOFT_TIME, "soft-expired", "seconds"),
    (lib.PD_ESP_F_SOFT_BYTES, "soft-expired", "bytes"),
    (lib.PD_ESP_F_SOFT_PACKETS, "soft-expired", "packets"),
    (lib.PD_ESP_F_HARD_TIME, "hard-expired", "seconds"),
    (lib.PD_ESP_F_HARD_BYTES, "hard-expired", "bytes"),
    (lib.PD_ESP_F_HARD_PACKETS, "hard-expired", "packets"),
    (lib.PD_ESP_F_SEQ_NEAR, "seq-nearing-exhaustion", "seq"),
    (lib.PD_ESP_F_SEQ_EXHAUSTED, "seq-exhausted", "seq"),
]


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{what} must be a whole number from {lo} to {hi}, not {v!r}")
    return v


def _ports(v: Any, what: str) -> tuple[int, int]:
    if v is None:
        return (0, 65535)
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    elif isinstance(v, str) and "-" in v:
        try:
            v = tuple(int(x) for x in v.split("-", 1))
        except ValueError:
            raise ConfigError(f"{what}: {v!r} is not a port or a range lo-hi") from None
    elif isinstance(v, str) and v.isdigit():
        v = (int(v), int(v))
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise ConfigError(f"{what}: {v!r} is not a port or a range lo-hi")
    lo, hi = (_int(x, what, 0, 65535) for x in v)
    if lo > hi:
        raise ConfigError(f"{what}: empty range {lo}-{hi}")
    return (lo, hi)


@dataclass
class Selector:
    """Inner traffic of an SA: ``src`` and ``dst`` prefixes (same family), an
    optional protocol (number or tcp/udp/icmp/...) and port ranges (a port,
    ``"lo-hi"`` or ``[lo, hi]``; ports only match TCP, UDP and SCTP)."""

    src: str
    dst: str
    proto: int | str | None = None
    sport: Any = None
    dport: Any = None

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The two prefixes, parsed; raises ConfigError naming the field."""
        out = []
        for k in ("src", "dst"):
            try:
                out.append(ipaddress.ip_network(str(getattr(self, k)), strict=False))
            except ValueError as e:
                raise ConfigError(f"{k}: {e}", key=k) from None
        if out[0].version != out[1].version:
            raise ConfigError("dst: src and dst are of different IP families", key="dst")
        return out[0], out[1]

    def proto_number(self) -> int:
        """The protocol number, 0 for any."""
        p = self.proto
        if p is None:
            return 0
        if isinstance(p, str):
            if p.lower() not in _PROTOS:
                raise ConfigError(f"proto: {p!r} is not one of {', '.join(_PROTOS)} or a "
                                  "number", key="proto")
            return _PROTOS[p.lower()]
        try:
            return _int(p, "proto", 0, 255)
        except ConfigError as e:
            raise ConfigError(e.message, key="proto") from None

    def validate(self) -> int:
        """Check every field; return the IP family (4 or 6)."""
        src, _ = self.networks()
        self.proto_number()
        for k in ("sport", "dport"):
            try:
                _ports(getattr(self, k), k)
            except ConfigError as e:
                raise ConfigError(e.message, key=k) from None
        return src.version

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready data."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Lifetime:
    """Soft and hard limits of an SA in seconds, bytes (inner IP bytes) and
    packets; None means no limit. Soft crossings are events (rekey now);
    at a hard limit the SA stops passing packets (``sa-expired``). The
    fast path checks once per SA group of a burst: seconds (a TSC deadline)
    and packets are exact, bytes may overshoot by the rest of one burst."""

    soft_seconds: float | None = None
    hard_seconds: float | None = None
    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None

    def validate(self) -> None:
        """Check every limit is positive and soft is not above hard."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name.endswith("seconds"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e9:
                    raise ConfigError(f"lifetime: {f.name} must be seconds above 0, not "
                                      f"{v!r}", key=f.name)
            else:
                try:
                    _int(v, f"lifetime: {f.name}", 1, 2**63)
                except ConfigError as e:
                    raise ConfigError(e.message, key=f.name) from None
        for kind in ("seconds", "bytes", "packets"):
            s, h = getattr(self, "soft_" + kind), getattr(self, "hard_" + kind)
            if s is not None and h is not None and s > h:
                raise ConfigError(f"lifetime: soft_{kind} {s} is above hard_{kind} {h}",
                                  key="soft_" + kind)

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready data."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _selector(i: int, s: Any) -> Any:
    """selectors[i] as a Selector (a mapping is checked key by key)."""
    if isinstance(s, Selector):
        return s
    if not isinstance(s, dict):
        raise ConfigError(f"selectors[{i}]: must be a mapping with src and dst",
                          key="selectors", path=("selectors", i))
    allowed = [f.name for f in dataclasses.fields(Selector)]
    for k in s:
        if k not in allowed:
            raise ConfigError(f"selectors[{i}] has no key '{k}' (allowed: "
                              f"{', '.join(allowed)})", key=k, path=("selectors", i, k))
    for k in ("src", "dst"):
        if k not in s:
            raise ConfigError(f"selectors[{i}] needs {k}", key=k, path=("selectors", i))
    return Selector(**dict(s))


def _key_bytes(v: Any) -> bytearray:
    """Key material from bytes, a bytearray or a hex string (YAML)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytearray(v)
    if isinstance(v, str):
        h = v[2:] if v.lower().startswith("0x") else v
        h = h.replace(":", "").replace(" ", "")
        try:
            return bytearray.fromhex(h)
        except ValueError:
            raise ConfigError("key: not a hex string (the value is not shown)",
                              key="key") from None
    raise ConfigError(f"key: must be bytes or a hex string, not {type(v).__name__}",
                      key="key")


@dataclass(repr=False)
class SA:
    """One ESP security association (one direction). See the module doc."""

    spi: int
    direction: str
    cipher: str
    key: bytearray = field(repr=False, compare=False)
    tunnel_src: str
    tunnel_dst: str
    selectors: list = field(default_factory=list)
    replay_window: int = 64
    esn: bool = False
    lifetime: Lifetime | dict | None = None
    initial_seq: int | None = None
    seq_margin: int | None = None
    ttl: int = 64

    def __post_init__(self) -> None:
        self.key = _key_bytes(self.key)
        if isinstance(self.selectors, list):
            self.selectors = [_selector(i, s) for i, s in enumerate(self.selectors)]
        if isinstance(self.lifetime, dict):
            self.lifetime = Lifetime(**self.lifetime)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SA:
        """Build from a mapping (YAML); unknown keys are refused by name."""
        names = [f.name for f in dataclasses.fields(cls)]
        for k in d:
            if k not in names:
                raise ConfigError(f"SA has no key '{k}' (allowed: {', '.join(names)})", key=k)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"SA needs {', '.join(missing)}", key=missing[0])
        sels = d.get("selectors", [])
        if not isinstance(sels, list):
            raise ConfigError("selectors: must be a list", key="selectors")
        fixed = dict(d)
        fixed["selectors"] = [_selector(i, s) for i, s in enumerate(sels)]
        lt = d.get("lifetime")
        if lt is not None and not isinstance(lt, (dict, Lifetime)):
            raise ConfigError("lifetime: must be a mapping", key="lifetime")
        if isinstance(lt, dict):
            allowed = [f.name for f in dataclasses.fields(Lifetime)]
            for k in lt:
                if k not in allowed:
                    raise ConfigError(f"lifetime has no key '{k}' (allowed: "
                                      f"{', '.join(allowed)})", key=k, path=("lifetime", k))
            fixed["lifetime"] = Lifetime(**dict(lt))
        sa = cls(**fixed)
        sa._static = True  # its key is file data: to_dict() writes it back
        return sa

    # -- validation ---------------------------------------------------------------
    def _err(self, key: str, msg: str, path: tuple = ()) -> ConfigError:
        spi = f"{self.spi:#x}" if isinstance(self.spi, int) else repr(self.spi)
        return ConfigError(f"SA {spi}: {key}: {msg}", key=key, path=path or (key,))

    def validate(self) -> None:
        """Check every field; raise ConfigError naming it (never showing the key)."""
        if isinstance(self.spi, bool) or not isinstance(self.spi, int) \
                or not 256 <= self.spi <= 0xFFFFFFFF:
            raise self._err("spi", f"must be a whole number from 256 to 0xffffffff (0-255 are "
                            f"reserved), not {self.spi!r}")
        if self.direction not in ("out", "in"):
            raise self._err("direction", f"must be 'out' or 'in', not {self.direction!r}")
        if self.cipher not in CIPHERS:
            raise self._err("cipher", f"{self.cipher!r} is not one of {', '.join(CIPHERS)}")
        need = CIPHERS[self.cipher][1] + 4
        if len(self.key) != need:
            raise self._err("key", f"{len(self.key)} bytes, {self.cipher} needs {need} "
                            f"({need - 4}-byte key + 4-byte salt)")
        fam = []
        for k in ("tunnel_src", "tunnel_dst"):
            try:
                fam.append(ipaddress.ip_address(str(getattr(self, k))).version)
            except ValueError as e:
                raise self._err(k, str(e)) from None
        if fam[0] != fam[1]:
            raise self._err("tunnel_dst", "tunnel_src and tunnel_dst are of different IP "
                            "families")
        if not isinstance(self.selectors, list) or not self.selectors:
            raise self._err("selectors", "an SA needs at least one selector (src, dst)")
        if len(self.selectors) > MAX_SELECTORS:
            raise self._err("selectors", f"{len(self.selectors)} given, at most "
                            f"{MAX_SELECTORS}")
        fams = set()
        for i, s in enumerate(self.selectors):
            if not isinstance(s, Selector):
                raise self._err("selectors", f"[{i}] is not a selector", ("selectors", i))
            try:
                fams.add(s.validate())
            except ConfigError as e:
                raise self._err("selectors", f"[{i}]: {e.message}",
                                ("selectors", i, e.key)) from None
        if len(fams) > 1:
            raise self._err("selectors", "IPv4 and IPv6 mixed: one SA carries one inner "
                            "family (use two SAs)")
        try:
            _int(self.replay_window, "replay_window", 0, MAX_WINDOW)
        except ConfigError as e:
            raise self._err("replay_window", e.message.split(" ", 1)[1]) from None
        if not isinstance(self.esn, bool):
            raise self._err("esn", f"must be true or false, not {self.esn!r}")
        if self.initial_seq is not None:
            top = 2**64 - 1 if self.esn else 2**32 - 1
            try:
                _int(self.initial_seq, "initial_seq", 0, top)
            except ConfigError as e:
                raise self._err("initial_seq", e.message.split(" ", 1)[1]
                                + ("" if self.esn else " (without esn)")) from None
        if self.seq_margin is not None:
            try:
                _int(self.seq_margin, "seq_margin", 1, 2**64 - 1)
            except ConfigError as e:
                raise self._err("seq_margin", e.message.split(" ", 1)[1]) from None
        try:
            _int(self.ttl, "ttl", 1, 255)
        except ConfigError as e:
            raise self._err("ttl", e.message.split(" ", 1)[1]) from None
        if self.lifetime is not None:
            if not isinstance(self.lifetime, Lifetime):
                raise self._err("lifetime", "must be a Lifetime or a mapping")
            try:
                self.lifetime.validate()
            except ConfigError as e:
                raise self._err("lifetime", e.message.split(": ", 1)[1],
                                ("lifetime", e.key)) from None

    # -- presentation -----------------------------------------------------------------
    def __repr__(self) -> str:
        spi = f"{self.spi:#x}" if isinstance(self.spi, int) else repr(self.spi)
        return (f"SA(spi={spi}, direction={self.direction!r}, cipher={self.cipher!r}, "
                f"key=<{len(self.key)} bytes hidden>, tunnel_src={self.tunnel_src!r}, "
                f"tunnel_dst={self.tunnel_dst!r}, selectors={self.selectors!r}, "
                f"replay_window={self.replay_window}, esn={self.esn})")

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready data. The key of a static SA (read from a pipeline file)
        is that file's data and is written back as hex, so the file round-trips;
        any other SA's key is written as ``<hidden>``."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "key":
                d["key"] = "0x" + bytes(v).hex() if getattr(self, "_static", False) \
                    else "<hidden>"
            elif f.name == "spi":
                d["spi"] = v
            elif v is None or (f.default is not dataclasses.MISSING and v == f.default):
                continue
            elif isinstance(v, list):
                d[f.name] = [x.to_dict() if hasattr(x, "to_dict") else x for x in v]
            elif hasattr(v, "to_dict"):
                d[f.name] = v.to_dict()
            else:
                d[f.name] = v
        return d

    def wipe(self) -> None:
        """Overwrite this object's copy of the key with zeros (in place)."""
        for i in range(len(self.key)):
            self.key[i] = 0

    # -- C ------------------------------------------------------------------------------
    def _conf(self) -> tuple[Any, Any]:
        """The C config and selector array; the caller wipes conf.key after use."""
        c = ffi.new("struct pd_esp_sa_conf *")
        c.spi = self.spi
        c.dir = lib.PD_ESP_DIR_OUT if self.direction == "out" else lib.PD_ESP_DIR_IN
        c.cipher = CIPHERS[self.cipher][0]
        c.key_len = len(self.key)
        ffi.memmove(c.key, self.key, len(self.key))
        src = ipaddress.ip_address(str(self.tunnel_src))
        dst = ipaddress.ip_address(str(self.tunnel_dst))
        c.outer_family = src.version
        ffi.memmove(c.tun_src, src.packed, len(src.packed))
        ffi.memmove(c.tun_dst, dst.packed, len(dst.packed))
        c.replay_window = self.replay_window
        c.esn = int(self.esn)
        c.initial_seq = self.initial_seq or 0
        c.seq_margin = self.seq_margin or 0
        c.ttl = self.ttl
        lt = self.lifetime
        if isinstance(lt, Lifetime):
            c.soft_bytes = lt.soft_bytes or 0
            c.hard_bytes = lt.hard_bytes or 0
            c.soft_packets = lt.soft_packets or 0
            c.hard_packets = lt.hard_packets or 0
            c.soft_ms = max(1, round(lt.soft_seconds * 1000)) if lt.soft_seconds else 0
            c.hard_ms = max(1, round(lt.hard_seconds * 1000)) if lt.hard_seconds else 0
        sels = ffi.new("struct pd_esp_sel[]", len(self.selectors))
        for i, s in enumerate(self.selectors):
            a, b = s.networks()
            sels[i].family = a.version
            sels[i].proto = s.proto_number()
            sels[i].src_depth = a.prefixlen
            sels[i].dst_depth = b.prefixlen
            ffi.memmove(sels[i].src, a.network_address.packed, len(a.network_address.packed))
            ffi.memmove(sels[i].dst, b.network_address.packed, len(b.network_address.packed))
            sels[i].sport_lo, sels[i].sport_hi = _ports(s.sport, "sport")
            sels[i].dport_lo, sels[i].dport_hi = _ports(s.dport, "dport")
        return c, sels


def _wipe_c(c: Any) -> None:
    ffi.memmove(c.key, bytes(len(c.key)), len(c.key))


def push(cp: Any, idx: int, sa: SA) -> None:
    """Validate ``sa`` and add it to the C stage ``idx`` of pipeline ``cp``."""
    sa.validate()
    c, sels = sa._conf()
    try:
        check(lib.pd_esp_sa_add(cp, idx, c, sels, len(sa.selectors)))
    finally:
        _wipe_c(c)


def configure_stage(cp: Any, idx: int, crypto: str) -> None:
    """Set an ESP stage's crypto device choice."""
    check(lib.pd_esp_config(cp, idx, CRYPTO_DEVICES[crypto]))


# -- the Dataplane methods ---------------------------------------------------------------
def _stage(dp: Dataplane, stage: str) -> int:
    st = dp.pipeline.stage(stage)
    if st.TYPE not in ("esp_encrypt", "esp_decrypt"):
        raise InvalidArgument(f"stage '{stage}' is a {st.TYPE}, not an ESP stage")
    if dp._cp is None:
        raise InvalidArgument("the dataplane is closed")
    return dp.stage_index[stage]


def _registry(dp: Dataplane) -> dict[tuple[str, int], SA]:
    reg = getattr(dp, "_esp_sas", None)
    if reg is None:
        reg = dp._esp_sas = {}
    return reg


def sa_add(dp: Dataplane, stage: str, sa: SA) -> None:
    """Add ``sa`` to ESP stage ``stage`` (esp_encrypt: out, esp_decrypt: in).

    Published with RCU: outbound, the newest SA for a selector takes its
    traffic from the next burst on; inbound, every SA of the stage decrypts
    until it is removed. Raises ConfigError naming a bad field,
    AlreadyExists for an SPI the stage has.
    """
    idx = _stage(dp, stage)
    want = "out" if dp.pipeline.stage(stage).TYPE == "esp_encrypt" else "in"
    sa.validate()
    if sa.direction != want:
        raise InvalidArgument(f"SA {sa.spi:#x}: direction: stage '{stage}' takes "
                              f"direction '{want}' SAs, not '{sa.direction}'")
    push(dp._cp, idx, sa)
    _registry(dp)[(stage, sa.spi)] = sa


def sa_remove(dp: Dataplane, stage: str, spi: int) -> None:
    """Remove an SA: unpublished (after an RCU grace period no worker holds
    it), its session destroyed and its memory wiped in C; the key of the SA
    object given to :func:`sa_add` is zeroed too."""
    idx = _stage(dp, stage)
    check(lib.pd_esp_sa_remove(dp._cp, idx, spi))
    sa = _registry(dp).pop((stage, spi), None)
    if sa is None:  # a static SA from the pipeline file
        st = dp.pipeline.stage(stage)
        sa = next((s for s in getattr(st, "sas", []) if s.spi == spi), None)
    if sa is not None:
        sa.wipe()
    getattr(dp, "_esp_seen", {}).pop((stage, spi), None)


def wipe_all(dp: Dataplane) -> None:
    """Zero the keys of every SA given to :func:`sa_add` (the dataplane closed:
    its C side destroyed them all). Static SAs of the pipeline file stay."""
    for sa in _registry(dp).values():
        sa.wipe()
    _registry(dp).clear()


def sa_drop_names() -> list[str]:
    """The per-SA drop reasons, in the C order."""
    return [cstr(lib.pd_esp_sa_drop_name(i)) for i in range(lib.PD_ESP_N_SA_DROPS)]


def _addr(raw: Any, family: int) -> str:
    b = bytes(ffi.buffer(raw, 16))
    return str(ipaddress.ip_address(b[:4] if family == 4 else b))


def sa_list(dp: Dataplane, stage: str) -> list[dict[str, Any]]:
    """Every SA of ``stage``, newest first, as dicts (never key material):
    spi, direction, cipher, tunnel_src, tunnel_dst, inner_family,
    replay_window, esn, packets, bytes (inner IP bytes), seq (out: last
    sent; in: highest authenticated), esn_high, drops (reason -> count),
    age_seconds, state (active / soft-expired / hard-expired), limits (the
    crossed limits: soft-seconds, ..., seq-nearing-exhaustion),
    crypto_dev, mode."""
    idx = _stage(dp, stage)
    cap = 64
    while True:
        out = ffi.new("struct pd_esp_sa_info[]", cap)
        n = check(lib.pd_esp_sa_list(dp._cp, idx, out, cap))
        if n <= cap:
            break
        cap = n
    names = sa_drop_names()
    res = []
    for i in range(n):
        o = out[i]
        flags = int(o.flags)
        crossed = [f"{ev.split('-')[0]}-{why}" if ev.endswith("expired") else ev
                   for bit, ev, why in _FLAGS if flags & bit]
        hard = flags & (lib.PD_ESP_F_HARD_TIME | lib.PD_ESP_F_HARD_BYTES
                        | lib.PD_ESP_F_HARD_PACKETS | lib.PD_ESP_F_SEQ_EXHAUSTED)
        soft = flags & (lib.PD_ESP_F_SOFT_TIME | lib.PD_ESP_F_SOFT_BYTES
                        | lib.PD_ESP_F_SOFT_PACKETS | lib.PD_ESP_F_SEQ_NEAR)
        res.append({
            "spi": int(o.spi),
            "direction": "out" if o.dir == lib.PD_ESP_DIR_OUT else "in",
            "cipher": CIPHER_NAMES[int(o.cipher)],
            "tunnel_src": _addr(o.tun_src, o.outer_family),
            "tunnel_dst": _addr(o.tun_dst, o.outer_family),
            "inner_family": int(o.inner_family),
            "replay_window": int(o.replay_window),
            "esn": bool(o.esn),
            "packets": int(o.packets),
            "bytes": int(o.bytes),
            "seq": int(o.seq),
            "esn_high": int(o.seq) >> 32,
            "drops": {names[k]: int(o.drops[k]) for k in range(len(names))},
            "age_seconds": int(o.age_ms) / 1000.0,
            "state": "hard-expired" if hard else "soft-expired" if soft else "active",
            "limits": crossed,
            "crypto_dev": cstr(o.crypto_dev),
            "mode": cstr(o.mode),
        })
    return res


def sa_events(dp: Dataplane, stage: str) -> list[dict[str, Any]]:
    """New lifetime events of ``stage``'s SAs since the last call.

    Each (SA, event, reason) is reported once: ``soft-expired`` (reason
    seconds, bytes or packets: rekey now), ``hard-expired`` (the SA passes
    nothing more), ``seq-nearing-exhaustion`` (outbound; rekey),
    ``seq-exhausted``. Each event is a dict: stage, spi, direction, event,
    reason, seq, packets, bytes, time (time.time()).
    """
    seen = getattr(dp, "_esp_seen", None)
    if seen is None:
        seen = dp._esp_seen = {}
    out = []
    now = time.time()
    idx = _stage(dp, stage)
    infos = ffi.new("struct pd_esp_sa_info[]", 1024)
    n = min(check(lib.pd_esp_sa_list(dp._cp, idx, infos, 1024)), 1024)
    for i in range(n):
        o = infos[i]
        key = (stage, int(o.spi))
        got = seen.setdefault(key, 0)
        new = int(o.flags) & ~got
        if not new:
            continue
        seen[key] = got | new
        for bit, ev, why in _FLAGS:
            if new & bit:
                out.append({"stage": stage, "spi": int(o.spi),
                            "direction": "out" if o.dir == lib.PD_ESP_DIR_OUT else "in",
                            "event": ev, "reason": why, "seq": int(o.seq),
                            "packets": int(o.packets), "bytes": int(o.bytes), "time": now})
    return out


def esp_stages(dp: Dataplane) -> list[str]:
    """Names of the dataplane's ESP stages (esp_encrypt and esp_decrypt)."""
    return [st.name for st in dp.pipeline.stages if st.TYPE in ("esp_encrypt", "esp_decrypt")]


def state(dp: Dataplane) -> dict[str, list[dict[str, Any]]]:
    """:func:`sa_list` of every ESP stage, by stage name (what ``pydp tunnel show``
    reads over the control socket as command ``sas``)."""
    return {name: sa_list(dp, name) for name in esp_stages(dp)}


def redact_keys(doc: Any) -> Any:
    """A copy of pipeline data (``Pipeline.to_dict()``) with every SA key
    replaced by ``<hidden>``: for anything shown outside the file itself."""
    if isinstance(doc, dict):
        return {k: ("<hidden>" if k == "key" and "spi" in doc else redact_keys(v))
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact_keys(x) for x in doc]
    return doc


__all__ = ["CIPHERS", "CRYPTO_DEVICES", "Lifetime", "SA", "Selector", "esp_stages",
           "redact_keys", "sa_add", "sa_events", "sa_list", "sa_remove", "state"]
