"""A node's tunnels: handshakes over UDP, SAs in the data path, rekey, rotation, revocation.

One :class:`TunnelManager` per node. It listens on the control-path UDP
address of its config, authenticates every peer (:class:`~.ca.TrustStore`),
and installs each handshake's two SAs into the ESP stages of an SA sink (a
:class:`pydp.Dataplane`, or :class:`~.sink.MemorySink` in tests).

**Generations and overlap.** Each handshake with a peer makes a *generation*: an
outbound and an inbound SA with fresh SPIs and keys. A rekey is a new handshake
while the current generation keeps carrying traffic:

1. the initiator installs its new inbound SA, then sends ``fin``;
2. the responder installs its new inbound and outbound SAs (the data path sends
   on the newest outbound SA at once), then sends ``ack``;
3. the initiator installs its new outbound SA: from now on both send on the new SPIs.

Nobody sends on an SPI before the receiver has installed it, and both sides keep
the old generation's SAs for ``grace`` seconds after the switch, so packets in
flight on the old SPIs are still decrypted. Then the old SAs are removed and
their keys wiped (in C by ``sa_remove``, in Python by :meth:`KeyMaterial.wipe`).

**Rekey triggers.** The soft lifetime (seconds, bytes or packets of either SA of
the generation, from ``sa_list``) and the data path's events (``sa_events``: soft
expiry, sequence number nearing exhaustion). The generation's initiator rekeys at
the soft limit; the responder waits until halfway between soft and hard, so the
two rarely start at once; if they do, the init of the node with the smaller id wins.
At the hard limit the generation is removed.

**Rotation.** When the node's certificate file changes (or on :meth:`rotate`),
the new certificate is loaded and every tunnel rehandshakes with it; the old
generation keeps the traffic flowing meanwhile.

**Revocation.** When the CRL file changes, on :meth:`deny`, and every few seconds,
every generation's peer certificate is checked again; a refused one (revoked,
expired, denied) is torn down at once (outbound first) and the peer's new
handshakes are refused with the reason.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InvalidArgument, PydpError
from . import handshake as hs
from .ca import NodeIdentity, PeerRefused, TrustStore
from .config import PeerConfig, TunnelConfig
from .sink import TunnelSA, make_sa

log = logging.getLogger("pydp.tunnel")

RETRANSMIT = 0.5     # seconds between retransmissions of an unanswered message
MAX_TRIES = 8        # then the attempt fails and is retried with backoff
BACKOFF_MAX = 10.0
RECHECK = 2.0        # seconds between re-verifications of peer certificates
RESP_KEEP = 30.0     # how long a finished responder answers retransmitted fins
#: data-path events (``sa_events``) that end an SA; any other (soft-expired,
#: seq-nearing-exhaustion) starts a rekey
HARD_EVENTS = ("hard-expired", "seq-exhausted")


def rekey_due(role: str, age: float, packets: int, nbytes: int, life: hs.Lifetime) -> str | None:
    """Which soft limit a generation has reached ('seconds', 'bytes', 'packets'), or None.

    The generation's initiator rekeys at the soft limit, the responder halfway
    between soft and hard (so the two rarely start at once).
    """
    def at(soft: float, hard: float) -> float:
        if not soft:
            return 0
        return soft if role == "initiator" or not hard else soft + (hard - soft) / 2
    for why, value, soft, hard in (("seconds", age, life.soft_seconds, life.hard_seconds),
                                   ("bytes", nbytes, life.soft_bytes, life.hard_bytes),
                                   ("packets", packets, life.soft_packets, life.hard_packets)):
        limit = at(soft, hard)
        if limit and value >= limit:
            return why
    return None


def data_path_lifetime(role: str, life: hs.Lifetime) -> hs.Lifetime:
    """The lifetime the data path enforces: hard as agreed, soft where this side rekeys.

    So the data path's soft-expired events agree with :func:`rekey_due`.
    """
    def at(soft: float, hard: float) -> float:
        return soft if role == "initiator" or not soft or not hard else soft + (hard - soft) / 2
    return hs.Lifetime(at(life.soft_seconds, life.hard_seconds), life.hard_seconds,
                       int(at(life.soft_bytes, life.hard_bytes)), life.hard_bytes,
                       int(at(life.soft_packets, life.hard_packets)), life.hard_packets)


def hard_expired(age: float, packets: int, nbytes: int, life: hs.Lifetime) -> str | None:
    """Which hard limit a generation has reached, or None."""
    for why, value, hard in (("seconds", age, life.hard_seconds),
                             ("bytes", nbytes, life.hard_bytes),
                             ("packets", packets, life.hard_packets)):
        if hard and value >= hard:
            return why
    return None


@dataclass
class Generation:
    """One handshake's SAs with a peer: an outbound and an inbound SA per inner family."""

    keys: hs.SessionKeys
    born: float
    installed: list[tuple[str, int]] = field(default_factory=list)  # (direction, spi)
    retire_at: float | None = None
    rekeying: bool = False
    soft_event: str | None = None  # a data-path event kept until the rekey starts

    @property
    def in_installed(self) -> bool:
        """True once any inbound SA of this generation is in the data path."""
        return any(d == "in" for d, _ in self.installed)

    @property
    def out_installed(self) -> bool:
        """True once the outbound SAs are in the data path (traffic uses them)."""
        return any(d == "out" for d, _ in self.installed)

    def spis(self, direction: str) -> list[int]:
        """This generation's SPIs of one direction."""
        return [p.spi_out if direction == "out" else p.spi_in for p in self.keys.pairs]

    def __repr__(self) -> str:
        return (f"Generation(peer={self.keys.peer}, out={self.spis('out')}, "
                f"in={self.spis('in')}, role={self.keys.role})")


class Tunnel:
    """The state of one peer."""

    def __init__(self, peer: PeerConfig, now: float) -> None:
        """A tunnel that is down and will connect at once."""
        self.peer = peer
        self.state = "down"
        self.gens: list[Generation] = []
        self.init: hs.Initiator | None = None
        self.init_gen: Generation | None = None
        self.init_why = ""
        self.init_sent = 0.0
        self.init_tries = 0
        self.failures = 0
        self.next_attempt = now
        self.since = now
        self.last_error: str | None = None
        self.handshakes = 0
        self.rekeys = 0

    def current(self) -> Generation | None:
        """The newest generation whose outbound SA is installed (or being used)."""
        live = [g for g in self.gens if g.out_installed and g.retire_at is None]
        return live[-1] if live else None


class TunnelManager:
    """All tunnels of one node (see the module docstring)."""

    def __init__(self, config: TunnelConfig, sink: Any, encrypt_stage: str | None = None,
                 decrypt_stage: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Load the identity and trust store, bind the UDP socket; :meth:`start` to run."""
        self.cfg = config
        self.sink = sink
        self.clock = clock
        self.enc = encrypt_stage or config.encrypt_stage or _find_stage(sink, "esp_encrypt")
        self.dec = decrypt_stage or config.decrypt_stage or _find_stage(sink, "esp_decrypt")
        _check_stage(sink, self.enc, "esp_encrypt", config.source)
        _check_stage(sink, self.dec, "esp_decrypt", config.source)
        self.trust = TrustStore(config.ca, config.crl, set(config.deny))
        self.me = NodeIdentity.load(config.cert, config.key, self.trust.trust_domain)
        if config.node and config.node != self.me.node:
            raise ConfigError(f"node: the config says {config.node}, the certificate "
                              f"{config.cert} is {self.me.node}", file=config.source, key="node")
        self.trust.verify(self.me.cert, expect=self.me.node)  # our own cert must be good too
        self._cert_mtime = _mtime(config.cert)
        self.replay = hs.ReplayCache()
        now = clock()
        self.tunnels = {p.node: Tunnel(p, now) for p in config.peers}
        self._resp: dict[str, tuple[hs.Responder, bytes, float, str]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_recheck = now
        self.events: deque[str] = deque(maxlen=64)
        self.rotations = 0
        self.identity_error: str | None = None
        self._crl_warned = False
        fam = socket.AF_INET6 if ":" in config.listen[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            self.sock.bind(config.listen)
        except OSError as e:
            self.sock.close()
            raise PydpError(f"listen {config.listen[0]}:{config.listen[1]}: {e.strerror}") \
                from None
        self.sock.setblocking(False)

    def __repr__(self) -> str:
        return f"TunnelManager(node={self.me.node}, peers={list(self.tunnels)})"

    # -- running ---------------------------------------------------------------------
    def start(self) -> None:
        """Run the manager in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"pydp-tunnel-{self.me.node}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(0.05)
            except Exception as e:  # noqa: BLE001 - the manager thread must not die
                self._note(f"internal error: {type(e).__name__}: {e}")
                time.sleep(0.1)

    def close(self) -> None:
        """Stop, remove every SA this manager installed (keys wiped), close the socket."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            for t in self.tunnels.values():
                self._abort_init(t)
                for g in list(t.gens):
                    self._remove_gen(t, g)
            for r, *_ in self._resp.values():
                r.close()
            self._resp.clear()
        self.sock.close()

    def __enter__(self) -> TunnelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, timeout: float = 0.0) -> None:
        """Handle the datagrams that arrive within ``timeout`` s, then run the timers once."""
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
        except (OSError, ValueError):
            return
        while ready:
            try:
                data, addr = self.sock.recvfrom(hs.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            with self._lock:
                self._on_datagram(data, addr)
        with self._lock:
            self._tick()

    # -- public actions (CLI and control socket call these) ------------------------------
    def rekey(self, peer: str | None = None) -> list[str]:
        """Start a rekey now with ``peer`` (or every peer that is up); the peers started."""
        with self._lock:
            out = []
            for t in self._pick(peer):
                if t.gens and t.init is None:
                    self._start_init(t, "manual rekey")
                    out.append(t.peer.node)
            return out

    def rotate(self) -> dict[str, Any]:
        """Reload this node's certificate and key from their files and rehandshake."""
        with self._lock:
            return self._rotate(force=True)

    def reload(self) -> dict[str, Any]:
        """Re-read the CRL and re-verify every peer now; returns the peers torn down."""
        with self._lock:
            self.trust.reload()
            return {"torn_down": self._recheck()}

    def deny(self, node: str) -> dict[str, Any]:
        """Put ``node`` on the deny list: tear its tunnel down, refuse its handshakes."""
        with self._lock:
            self.trust.deny.add(node)
            return {"denied": node, "torn_down": self._recheck()}

    def wait_up(self, peer: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until the tunnel to ``peer`` (or every peer) is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(t.state == "up" for t in self._pick(peer)):
                    return True
            time.sleep(0.02)
        return False

    def show(self) -> dict[str, Any]:
        """Identity, tunnels, SAs with counters and lifetimes - never keys."""
        with self._lock:
            now = self.clock()
            counters = self._counters()
            tunnels = []
            for t in self.tunnels.values():
                sas = []
                for g in t.gens:
                    k = g.keys
                    fam = {x: p.family for p in k.pairs for x in (p.spi_out, p.spi_in)}
                    for direction, spi in g.installed:
                        c = counters.get((direction, spi), {})
                        sas.append({
                            "direction": direction, "spi": f"{spi:#010x}", "cipher": k.cipher,
                            "family": fam[spi],
                            "role": k.role, "age_s": round(now - g.born, 3),
                            "packets": int(c.get("packets", 0)), "bytes": int(c.get("bytes", 0)),
                            "lifetime": k.lifetime.to_dict(),
                            "state": "retiring" if g.retire_at is not None else (
                                "active" if g is t.current() else "standby"),
                            "retire_in_s": (round(max(0.0, g.retire_at - now), 3)
                                            if g.retire_at is not None else None),
                            "peer_serial": f"{k.peer_cert.serial_number:x}"})
                tunnels.append({
                    "peer": t.peer.node, "state": t.state, "endpoint":
                    f"{t.peer.endpoint[0]}:{t.peer.endpoint[1]}", "address": t.peer.address,
                    "subnets": t.peer.subnets, "since_s": round(now - t.since, 3),
                    "handshakes": t.handshakes, "rekeys": t.rekeys,
                    "rekey_in_progress": t.init is not None, "last_error": t.last_error,
                    "sas": sas})
            return {"node": self.me.node, "spiffe_id": f"spiffe://{self.trust.trust_domain}/"
                    f"node/{self.me.node}", "serial": f"{self.me.cert.serial_number:x}",
                    "not_after": self.me.cert.not_valid_after_utc.isoformat(),
                    "listen": f"{self.cfg.listen[0]}:{self.cfg.listen[1]}",
                    "address": self.cfg.address, "subnets": self.cfg.subnets,
                    "stages": {"encrypt": self.enc, "decrypt": self.dec},
                    "rotations": self.rotations, "deny": sorted(self.trust.deny),
                    "identity_error": self.identity_error,
                    "revoked_serials": len(self.trust.revoked_serials()),
                    "crl_next_update": (self.trust.crl_next_update().isoformat()
                                        if self.trust.crl is not None else None),
                    "crl_stale": self.trust.crl_stale(),
                    "tunnels": tunnels, "events": list(self.events)[-20:]}

    # -- internals ---------------------------------------------------------------------
    def _pick(self, peer: str | None) -> list[Tunnel]:
        if peer is None:
            return list(self.tunnels.values())
        if peer not in self.tunnels:
            raise InvalidArgument(f"no peer '{peer}' (peers: {', '.join(self.tunnels)})")
        return [self.tunnels[peer]]

    def _note(self, msg: str) -> None:
        log.info("%s: %s", self.me.node, msg)
        self.events.append(f"{time.strftime('%H:%M:%S')} {msg}")

    def _send(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as e:
            self._note(f"send to {addr[0]}:{addr[1]}: {e.strerror}")

    def _spi_taken(self, spi: int) -> bool:
        for t in self.tunnels.values():
            for g in t.gens + ([t.init_gen] if t.init_gen else []):
                if spi in g.keys.spis_in():
                    return True
        return any(spi in r._keys.spis_in() for r, *_ in self._resp.values())

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        try:
            msg = hs.decode(data)
        except PeerRefused as e:
            self._note(f"from {addr[0]}:{addr[1]}: {e.reason}")
            return
        kind = msg["t"]
        try:
            if kind == "init":
                self._on_init(msg, data, addr)
            elif kind == "resp":
                self._on_resp(msg)
            elif kind == "fin":
                self._on_fin(msg, addr)
            elif kind == "ack":
                self._on_ack(msg)
            elif kind == "refuse":
                self._on_refuse(msg)
        except PeerRefused as e:
            self._note(f"refused {kind} from {addr[0]}:{addr[1]}: {e.reason}")
            if kind in ("init", "fin"):
                self._send(hs.refusal(str(msg.get("sid", "")), e.reason), addr)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # hostile or broken input must never reach the manager's own state
            self._note(f"malformed {kind} from {addr[0]}:{addr[1]}: {type(e).__name__}")

    def _on_init(self, msg: dict, raw: bytes, addr: Any) -> None:
        sid = str(msg.get("sid", ""))
        old = self._resp.get(sid)
        if old is not None and old[1] == raw:
            self._send(old[0].m2, self.tunnels[old[3]].peer.endpoint)  # same init: same resp
            return
        peer = msg.get("from")
        t = self.tunnels.get(peer) if isinstance(peer, str) else None
        if t is not None and t.init is not None and t.init.m3 is None and self.me.node < peer:
            return  # both started at once: our init wins, theirs is dropped
        r = hs.Responder(self.me, self.trust, msg, raw, self.tunnels, self.cfg.ciphers,
                         self.cfg.lifetime, self.replay, self._spi_taken,
                         lambda node: self.families(self.tunnels[node].peer))
        t = self.tunnels[r.peer]
        if t.init is not None and t.init.m3 is None:
            self._abort_init(t)  # theirs wins (their id is smaller)
        self._resp[sid] = (r, raw, self.clock(), r.peer)
        # answers go to the peer's configured endpoint, never to whatever source address
        # an init claims: the handshake cannot be used to reflect traffic elsewhere
        self._send(r.m2, t.peer.endpoint)

    def _on_fin(self, msg: dict, addr: Any) -> None:
        _, body = hs._body(msg)
        rec = self._resp.get(str(body.get("sid_i", "")))
        if rec is None:
            raise PeerRefused("fin for no session")
        r = rec[0]
        first = r.m4 is None
        m4, keys = r.on_fin(msg)
        if first:
            t = self.tunnels[r.peer]
            g = Generation(keys, self.clock())
            try:
                self._install(t, g, "in")
                self._install(t, g, "out")
            except PydpError as e:
                self._remove_gen(t, g)
                raise PeerRefused(f"cannot install SAs: {e}") from None
            self._established(t, g, "responder")
        self._send(m4, self.tunnels[r.peer].peer.endpoint)

    def _on_resp(self, msg: dict) -> None:
        _, body = hs._body(msg)
        t = next((x for x in self.tunnels.values()
                  if x.init is not None and x.init.sid.hex() == body.get("sid_i")), None)
        if t is None or t.init is None:
            return  # a late or foreign resp: nothing waits for it
        ini = t.init
        if ini.m3 is not None:
            self._send(ini.m3, t.peer.endpoint)
            return
        try:
            m3, keys = ini.on_resp(msg)
        except PeerRefused as e:
            self._fail_init(t, e.reason)
            return
        g = Generation(keys, self.clock())
        t.init_gen = g
        try:
            self._install(t, g, "in")
        except PydpError as e:
            self._fail_init(t, f"cannot install inbound SA: {e}")
            return
        t.init_tries, t.init_sent = 1, self.clock()
        self._send(m3, t.peer.endpoint)

    def _on_ack(self, msg: dict) -> None:
        t = next((x for x in self.tunnels.values()
                  if x.init is not None and x.init.sid.hex() == msg.get("sid_i")), None)
        if t is None or t.init is None or t.init_gen is None:
            return
        t.init.on_ack(msg)
        g = t.init_gen
        try:
            self._install(t, g, "out")
        except PydpError as e:
            self._fail_init(t, f"cannot install outbound SA: {e}")
            return
        t.init.close()
        t.init, t.init_gen = None, None
        self._established(t, g, "initiator")

    def _on_refuse(self, msg: dict) -> None:
        t = next((x for x in self.tunnels.values()
                  if x.init is not None and x.init.sid.hex() == msg.get("sid")), None)
        if t is not None:
            self._fail_init(t, f"refused by {t.peer.node}: {str(msg.get('reason', ''))[:300]}")

    def _established(self, t: Tunnel, g: Generation, role: str) -> None:
        now = self.clock()
        rekey = bool(t.gens)
        for old in t.gens:
            if old.retire_at is None:
                old.retire_at = now + self.cfg.grace
        t.gens.append(g)
        t.handshakes += 1
        t.rekeys += rekey
        t.failures = 0
        if t.state != "up":
            t.state, t.since = "up", now
        t.last_error = None
        self._note(f"{'rekeyed' if rekey else 'up'} with {t.peer.node} as {role}: "
                   + ", ".join(f"IPv{p.family} out {p.spi_out:#x} in {p.spi_in:#x}"
                               for p in g.keys.pairs) + f" {g.keys.cipher}")

    def families(self, peer: PeerConfig) -> list[int]:
        """The inner families this node carries with ``peer``: both sides have subnets of it."""
        mine = {_family(n) for n in self.cfg.subnets}
        return sorted(mine & {_family(n) for n in peer.subnets})

    def _selectors(self, src: list[str], dst: list[str], family: int) -> list[dict[str, Any]]:
        return [{"src": s, "dst": d} for s in src for d in dst
                if _family(s) == family and _family(d) == family]

    def _install(self, t: Tunnel, g: Generation, direction: str) -> None:
        """Install every SA of one direction of ``g`` (inbound: the peer's traffic to us)."""
        k = g.keys
        life = data_path_lifetime(k.role, k.lifetime)
        for p in k.pairs:
            if direction == "in":
                sa = TunnelSA(p.spi_in, "in", k.cipher, p.key_in, t.peer.address,
                              self.cfg.address,
                              self._selectors(t.peer.subnets, self.cfg.subnets, p.family),
                              life, self.cfg.replay_window, self.cfg.esn)
                self._add(self.dec, sa)
            else:
                sa = TunnelSA(p.spi_out, "out", k.cipher, p.key_out, self.cfg.address,
                              t.peer.address,
                              self._selectors(self.cfg.subnets, t.peer.subnets, p.family),
                              life, self.cfg.replay_window, self.cfg.esn)
                self._add(self.enc, sa)
            g.installed.append((direction, sa.spi))

    def _add(self, stage: str, sa: TunnelSA) -> None:
        obj = make_sa(self.sink, sa)
        try:
            self.sink.sa_add(stage, obj)
        except BaseException:
            wipe = getattr(obj, "wipe", None)  # the data path's copy of a refused SA
            if wipe is not None and obj is not sa:
                wipe()
            raise

    def _remove_gen(self, t: Tunnel, g: Generation) -> None:
        """Remove a generation's SAs (outbound first) and wipe its keys."""
        for direction, spi in sorted(g.installed, key=lambda x: x[0] != "out"):
            try:
                self.sink.sa_remove(self.enc if direction == "out" else self.dec, spi)
            except PydpError as e:
                self._note(f"removing SA {spi:#x}: {e}")
        g.installed.clear()
        g.keys.wipe()
        if g in t.gens:
            t.gens.remove(g)

    def _start_init(self, t: Tunnel, why: str) -> None:
        t.init = hs.Initiator(self.me, self.trust, t.peer.node, self.cfg.ciphers,
                              self.cfg.lifetime, self._spi_taken, self.families(t.peer))
        t.init_gen, t.init_why = None, why
        t.init_tries, t.init_sent = 1, self.clock()
        if t.state == "down" or t.state == "refused":
            t.state = "connecting"
        self._send(t.init.m1, t.peer.endpoint)

    def _abort_init(self, t: Tunnel) -> None:
        if t.init_gen is not None:
            self._remove_gen(t, t.init_gen)
        if t.init is not None:
            t.init.close()
        t.init, t.init_gen = None, None

    def _fail_init(self, t: Tunnel, reason: str) -> None:
        g = t.init_gen
        if g is not None and g.in_installed and t.init is not None and t.init.m3 is not None \
                and t.current() is not None:
            # fin went out but no ack came: the responder may already send on this SPI,
            # so the inbound SA stays (as the oldest generation) until the next handshake
            # retires it, or its hard lifetime ends it
            t.init_gen = None
            t.gens.insert(0, g)
        self._abort_init(t)
        for g in t.gens:
            g.rekeying = False  # retried after the backoff
        t.failures += 1
        t.last_error = reason
        t.next_attempt = self.clock() + min(BACKOFF_MAX, 0.5 * 2 ** min(t.failures, 5))
        if not t.gens:
            t.state = "refused" if "refused" in reason or "revoked" in reason else "down"
        self._note(f"handshake with {t.peer.node} failed: {reason}")

    def teardown(self, peer: str, reason: str) -> None:
        """Remove every SA with ``peer`` (keys wiped); it reconnects only if it passes again."""
        with self._lock:
            t = self._pick(peer)[0]
            self._abort_init(t)
            for g in list(t.gens):
                self._remove_gen(t, g)
            t.state, t.since, t.last_error = "refused", self.clock(), reason
            t.next_attempt = self.clock() + BACKOFF_MAX
            for sid, rec in list(self._resp.items()):
                if rec[3] == peer:
                    rec[0].close()
                    del self._resp[sid]
            self._note(f"tore down tunnel with {peer}: {reason}")

    def _answering(self, peer: str, now: float) -> bool:
        """True while a handshake from ``peer`` that we answered waits for its fin."""
        return any(p == peer and r.m4 is None and now - born < MAX_TRIES * RETRANSMIT
                   for r, _raw, born, p in self._resp.values())

    def _recheck(self) -> list[str]:
        """Verify every generation's peer certificate again; tear down refused ones."""
        self._last_recheck = self.clock()
        down = []
        stale = self.trust.crl_stale()
        if stale and not self._crl_warned:
            self._note(f"CRL {self.trust.crl_path} is stale (nextUpdate "
                       f"{self.trust.crl_next_update().isoformat()}): re-issue it with "
                       "`pydp tunnel ca crl`; peers are still checked against it")
        self._crl_warned = stale
        try:
            self.trust.verify(self.me.cert, expect=self.me.node)
            self.identity_error = None
        except PeerRefused as e:
            # this node itself is out of the mesh (revoked, denied, expired): stop
            self.identity_error = f"this node's own certificate: {e.reason}"
            for t in self.tunnels.values():
                if t.gens or t.init is not None or t.state != "refused":
                    self.teardown(t.peer.node, self.identity_error)
                    down.append(t.peer.node)
            return down
        for t in self.tunnels.values():
            for g in list(t.gens):
                try:
                    self.trust.verify(g.keys.peer_cert, expect=t.peer.node)
                except PeerRefused as e:
                    if any(x is not g for x in t.gens) and g is not t.gens[-1]:
                        self._remove_gen(t, g)  # an old generation under a rotated cert
                        continue
                    self.teardown(t.peer.node, e.reason)
                    down.append(t.peer.node)
                    break
        return down

    def _rotate(self, force: bool) -> dict[str, Any]:
        try:
            new = NodeIdentity.load(self.cfg.cert, self.cfg.key, self.trust.trust_domain)
            self.trust.verify(new.cert, expect=self.me.node)
        except (PydpError, OSError) as e:
            if force:
                raise
            # said once per change of the file; the old identity stays in use
            self._cert_mtime = _mtime(self.cfg.cert)
            self._note(f"new certificate in {self.cfg.cert} not used: {e}")
            return {"rotated": False, "error": str(e)}
        self._cert_mtime = _mtime(self.cfg.cert)
        if new.cert.serial_number == self.me.cert.serial_number and not force:
            return {"rotated": False}
        old = self.me.cert.serial_number
        self.me = new
        self.rotations += 1
        self.identity_error = None
        started = []
        for t in self.tunnels.values():
            if t.init is not None:
                self._abort_init(t)
            if t.gens:
                self._start_init(t, "certificate rotation")
                started.append(t.peer.node)
        self._note(f"certificate rotated: serial {old:x} -> {new.cert.serial_number:x}; "
                   f"rehandshaking with {', '.join(started) or 'nobody'}")
        return {"rotated": True, "serial": f"{new.cert.serial_number:x}", "rehandshake": started}

    def _counters(self) -> dict[tuple[str, int], dict]:
        out = {}
        for stage, direction in ((self.enc, "out"), (self.dec, "in")):
            try:
                for s in self.sink.sa_list(stage):
                    out[(direction, int(s["spi"]))] = s
            except PydpError:
                pass
        return out

    def _tick(self) -> None:
        now = self.clock()
        # CRL and own-certificate changes
        try:
            if self.trust.reload():
                self._note("CRL reloaded")
                self._recheck()
        except ConfigError as e:
            self._note(str(e))
        if now - self._last_recheck >= RECHECK:
            self._recheck()
        m = _mtime(self.cfg.cert)
        if m != self._cert_mtime:
            self._rotate(force=False)
        # data-path events
        events: dict[int, str] = {}
        for stage in (self.enc, self.dec):
            try:
                for ev in self.sink.sa_events(stage) or []:
                    events[int(ev.get("spi", -1))] = str(ev.get("event", ev.get("kind", "")))
            except PydpError:
                pass
        counters = self._counters()
        for t in self.tunnels.values():
            # retransmissions
            if t.init is not None and now - t.init_sent >= RETRANSMIT:
                if t.init_tries >= MAX_TRIES:
                    self._fail_init(t, f"no answer from {t.peer.node} at "
                                       f"{t.peer.endpoint[0]}:{t.peer.endpoint[1]}")
                else:
                    t.init_tries += 1
                    t.init_sent = now
                    self._send(t.init.m3 or t.init.m1, t.peer.endpoint)
            # retire old generations after their grace period
            for g in list(t.gens):
                if g.retire_at is not None and now >= g.retire_at:
                    self._remove_gen(t, g)
            # lifetimes and events of the live generations
            for g in list(t.gens):
                k = g.keys
                cs = [counters.get(x, {}) for x in g.installed]
                pk = max([int(c.get("packets", 0)) for c in cs] or [0])
                by = max([int(c.get("bytes", 0)) for c in cs] or [0])
                age = now - g.born
                ev = next((events[spi] for _, spi in g.installed if spi in events), None)
                hard = hard_expired(age, pk, by, k.lifetime) or (
                    ev if ev in HARD_EVENTS else None)
                if hard:
                    self._note(f"SAs {g.spis('out')}/{g.spis('in')} with {t.peer.node} "
                               f"reached its hard {hard} lifetime")
                    self._remove_gen(t, g)
                    continue
                if ev:  # sa_events reports each event once: keep it until it is acted on
                    g.soft_event = g.soft_event or ev
                if g.retire_at is not None or g.rekeying or g is not t.gens[-1]:
                    continue
                ev = g.soft_event
                why = rekey_due(k.role, age, pk, by, k.lifetime) or ev
                if why and t.init is None and now >= t.next_attempt and \
                        self.identity_error is None:
                    g.rekeying = True
                    self._start_init(t, f"soft {why} lifetime" if not ev else f"data path: {ev}")
                    self._note(f"rekeying with {t.peer.node}: {t.init_why}")
            if not t.gens and t.state == "up":
                t.state, t.since = "down", now
                t.next_attempt = now
            # connect
            if not t.gens and t.init is None and now >= t.next_attempt and \
                    self.identity_error is None and not self._answering(t.peer.node, now):
                self._start_init(t, "connect")
        # forget finished responders
        for sid, (r, _raw, born, _peer) in list(self._resp.items()):
            if now - born >= RESP_KEEP:
                r.close()
                del self._resp[sid]


def _family(net: str) -> int:
    return ipaddress.ip_network(net).version


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _check_stage(sink: Any, name: str, type_: str, source: str) -> None:
    """The stage the config names must exist in the pipeline, with the right type."""
    pl = getattr(sink, "pipeline", None)
    if pl is None:
        return
    st = next((s for s in pl.stages if s.name == name), None)
    if st is None or st.TYPE != type_:
        have = [s.name for s in pl.stages if s.TYPE == type_]
        raise ConfigError(f"stages: pipeline '{pl.name}' has no {type_} stage '{name}' "
                          f"({type_} stages: {', '.join(have) or 'none'})", file=source,
                          key="stages")


def _find_stage(sink: Any, type_: str) -> str:
    pl = getattr(sink, "pipeline", None)
    if pl is None:
        return "esp_out" if type_ == "esp_encrypt" else "esp_in"
    names = [s.name for s in pl.stages if s.TYPE == type_]
    if not names:
        raise ConfigError(f"pipeline '{pl.name}' has no {type_} stage: a tunnel node needs "
                          "esp_encrypt and esp_decrypt (see testbeds/tunnel-node.yaml)",
                          key="stages")
    if len(names) != 1:
        raise ConfigError(f"pipeline '{pl.name}' has {len(names)} {type_} stages: name the one "
                          "for tunnels in the tunnel config (stages: {encrypt:, decrypt:})",
                          key="stages")
    return names[0]
