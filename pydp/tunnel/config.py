"""A node's tunnel configuration (YAML), validated with file, line and key in errors.

::

    node: n1                         # optional: checked against the certificate
    cert: pki/n1.crt                 # paths are relative to this file
    key: pki/n1.key                  # must be 0600
    ca: pki/ca.crt
    crl: pki/crl.pem                 # optional; re-read when it changes
    deny: []                         # node ids refused whatever their certificate
    listen: 127.0.0.1:7401           # handshake UDP (control path, not the ESP wire)
    address: 192.168.77.1            # this node's outer (tunnel) address
    subnets: [10.77.1.0/24]          # inner networks behind this node (IPv4 and/or IPv6:
                                     # one SA pair per family both sides have)
    ciphers: [aes-gcm-128, aes-gcm-256, chacha20-poly1305]   # preference order
    lifetime: {seconds: 3600, bytes: 0, packets: 0, soft: 0.8}
    grace: 2.0                       # seconds the old SAs stay after a rekey
    replay_window: 64
    esn: false
    stages: {encrypt: esp_out, decrypt: esp_in}   # default: found by type
    peers:
      - {node: n2, endpoint: 127.0.0.1:7402, address: 192.168.77.2, subnets: [10.77.2.0/24]}
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import yamlsrc
from ..errors import ConfigError
from .ca import check_node_id
from .handshake import CIPHERS, Lifetime

TOP_KEYS = ("node", "cert", "key", "ca", "crl", "deny", "listen", "address", "subnets",
            "ciphers", "lifetime", "grace", "replay_window", "esn", "stages", "peers")
PEER_KEYS = ("node", "endpoint", "address", "subnets")
LIFE_KEYS = ("seconds", "bytes", "packets", "soft")


@dataclass
class PeerConfig:
    """One peer: its node id, handshake endpoint, outer address, inner subnets."""

    node: str
    endpoint: tuple[str, int]
    address: str
    subnets: list[str]


@dataclass
class TunnelConfig:
    """Everything a :class:`~pydp.tunnel.manager.TunnelManager` needs."""

    cert: str
    key: str
    ca: str
    listen: tuple[str, int]
    address: str
    subnets: list[str]
    peers: list[PeerConfig]
    node: str | None = None
    crl: str | None = None
    deny: list[str] = field(default_factory=list)
    ciphers: list[str] = field(default_factory=lambda: list(CIPHERS))
    lifetime: Lifetime = field(default_factory=lambda: Lifetime.from_hard(3600))
    grace: float = 2.0
    replay_window: int = 64
    esn: bool = False
    encrypt_stage: str | None = None
    decrypt_stage: str | None = None
    source: str = "<config>"

    def peer(self, node: str) -> PeerConfig | None:
        """The configured peer ``node``, or None."""
        return next((p for p in self.peers if p.node == node), None)

    @classmethod
    def load(cls, path: str | Path) -> TunnelConfig:
        """Load and validate a YAML file."""
        return cls.from_dict(yamlsrc.load(path), str(path), Path(path).resolve().parent)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<config>",
                  base: Path | None = None) -> TunnelConfig:
        """Validate a mapping (as loaded from YAML); relative paths are under ``base``."""
        def err(msg: str, key: str, obj: Any = None) -> ConfigError:
            o = obj if obj is not None else d
            line = o.line_of(key) if hasattr(o, "line_of") else None
            return ConfigError(f"{key}: {msg}", file=source, line=line, key=key)

        if not isinstance(d, dict):
            raise ConfigError("a tunnel config is a mapping", file=source)
        for k in d:
            if k not in TOP_KEYS:
                raise err(f"unknown key (allowed: {', '.join(TOP_KEYS)})", k)
        for k in ("cert", "key", "ca", "listen", "address", "peers"):
            if k not in d:
                raise ConfigError(f"missing key '{k}'", file=source, key=k)
        base = base or Path.cwd()

        def path(k: str) -> str:
            v = d[k]
            if not isinstance(v, str) or not v:
                raise err("expected a file path", k)
            return str((base / v) if not Path(v).is_absolute() else Path(v))

        def endpoint(v: Any, k: str, obj: Any) -> tuple[str, int]:
            host, sep, port = str(v).rpartition(":")
            try:
                ipaddress.ip_address(host.strip("[]"))
                p = int(port)
                if not sep or not 0 < p < 65536:
                    raise ValueError
            except ValueError:
                raise err(f"{v!r} is not ADDRESS:PORT like 127.0.0.1:7401", k, obj) from None
            return host.strip("[]"), p

        def addr(v: Any, k: str, obj: Any) -> str:
            try:
                return str(ipaddress.ip_address(v))
            except ValueError:
                raise err(f"{v!r} is not an IP address", k, obj) from None

        def nets(v: Any, k: str, obj: Any) -> list[str]:
            if not isinstance(v, list) or not v:
                raise err("expected a non-empty list of CIDR prefixes", k, obj)
            try:
                return [str(ipaddress.ip_network(x, strict=True)) for x in v]
            except ValueError as e:
                raise err(str(e), k, obj) from None

        peers = []
        if not isinstance(d["peers"], list):
            raise err("expected a list of peers", "peers")
        for i, p in enumerate(d["peers"]):
            if not isinstance(p, dict):
                raise err(f"peer {i} is not a mapping", "peers")
            for k in p:
                if k not in PEER_KEYS:
                    raise err(f"unknown key in peer {i} (allowed: {', '.join(PEER_KEYS)})",
                              k, p)
            for k in PEER_KEYS:
                if k not in p:
                    raise err(f"peer {i} misses '{k}'", "peers")
            try:
                check_node_id(p["node"])
            except ConfigError as e:
                raise err(e.message, "node", p) from None
            if any(q.node == p["node"] for q in peers):
                raise err(f"peer {p['node']} listed twice", "node", p)
            peers.append(PeerConfig(p["node"], endpoint(p["endpoint"], "endpoint", p),
                                    addr(p["address"], "address", p),
                                    nets(p["subnets"], "subnets", p)))
        mine = nets(d.get("subnets"), "subnets", d)
        my_fams = {ipaddress.ip_network(n).version for n in mine}
        for i, p in enumerate(peers):
            if not my_fams & {ipaddress.ip_network(n).version for n in p.subnets}:
                raise err(f"peer {p.node}: its subnets and this node's have no address family "
                          "in common (nothing to tunnel)", "subnets", d["peers"][i])
        ciphers = d.get("ciphers", list(CIPHERS))
        if not isinstance(ciphers, list) or not ciphers or \
                any(c not in CIPHERS for c in ciphers):
            raise err(f"{ciphers!r}: a list of {', '.join(CIPHERS)}", "ciphers")
        life = d.get("lifetime", {})
        if not isinstance(life, dict):
            raise err("expected {seconds, bytes, packets, soft}", "lifetime")
        for k in life:
            if k not in LIFE_KEYS:
                raise err(f"unknown key '{k}' (allowed: {', '.join(LIFE_KEYS)})", "lifetime")
        soft = life.get("soft", 0.8)
        if not isinstance(soft, (int, float)) or not 0.1 <= soft < 1:
            raise err(f"soft {soft!r}: a fraction of the hard lifetime in [0.1, 1)", "lifetime")
        vals = {}
        for k, default in (("seconds", 3600), ("bytes", 0), ("packets", 0)):
            v = life.get(k, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise err(f"{k} {v!r}: a non-negative number (0: no limit)", "lifetime")
            vals[k] = v
        if not any(vals.values()):
            raise err("give at least one of seconds, bytes, packets", "lifetime")
        grace = d.get("grace", 2.0)
        if not isinstance(grace, (int, float)) or grace < 0:
            raise err(f"{grace!r}: seconds, >= 0", "grace")
        rw = d.get("replay_window", 64)
        if not isinstance(rw, int) or isinstance(rw, bool) or not 0 <= rw <= 4096:
            raise err(f"{rw!r}: 0..4096", "replay_window")
        esn = d.get("esn", False)
        if not isinstance(esn, bool):
            raise err(f"{esn!r}: true or false", "esn")
        stages = d.get("stages", {})
        if not isinstance(stages, dict) or any(k not in ("encrypt", "decrypt") for k in stages):
            raise err("expected {encrypt: STAGE, decrypt: STAGE}", "stages")
        deny = d.get("deny", [])
        if not isinstance(deny, list):
            raise err("expected a list of node ids", "deny")
        node = d.get("node")
        if node is not None:
            try:
                check_node_id(node)
            except ConfigError as e:
                raise err(e.message, "node") from None
        return cls(cert=path("cert"), key=path("key"), ca=path("ca"),
                   crl=path("crl") if d.get("crl") else None,
                   listen=endpoint(d["listen"], "listen", d),
                   address=addr(d["address"], "address", d),
                   subnets=mine,
                   peers=peers, node=node, deny=[str(x) for x in deny], ciphers=list(ciphers),
                   lifetime=Lifetime.from_hard(vals["seconds"], int(vals["bytes"]),
                                               int(vals["packets"]), float(soft)),
                   grace=float(grace), replay_window=rw, esn=esn,
                   encrypt_stage=stages.get("encrypt"), decrypt_stage=stages.get("decrypt"),
                   source=source)
