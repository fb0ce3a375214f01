"""Services and backends as data: validated, YAML-ready, pushed to the lb stage.

A service is a VIP (IPv4 or IPv6), a port and a protocol, with backends that
have weights, and one algorithm: ``maglev`` (weighted, prime table size,
65537 by default), ``wrr`` (smooth weighted round-robin) or ``least_conn``
(weighted least-connections on the flow table's live counts). Bad input
raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

ALGORITHMS = {"wrr": 0, "maglev": 1, "least_conn": 2}
PROTOS = {"tcp": 6, "udp": 17}
STATES = {"up": 0, "drain": 1, "down": 2}
DEFAULT_TABLE = 65537
MAX_WEIGHT = 65535
MAX_TABLE = 16777259

SERVICE_KEYS = ("name", "vip", "port", "proto", "algorithm", "table_size", "snat", "backends")
BACKEND_KEYS = ("addr", "port", "weight", "state")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _addr(value: Any, key: str, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {key}: {value!r} is not an IPv4 or IPv6 address",
                          key=key) from None


def _port(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where}: {key}: {value!r} is not a port from 1 to 65535", key=key)
    return value


def _keys(d: Any, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: must be a mapping with {', '.join(allowed)}")
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: no key '{k}' (allowed: {', '.join(allowed)})", key=k)


def backend_name(addr: str, port: int) -> str:
    """How a backend is named: ``10.0.1.1:8080`` or ``[2001:db8::1]:8080``."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def parse_backend_name(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (IPv6: ``[ADDR]:PORT``) -> (address, port); ConfigError naming 'backend'."""
    t = str(text)
    try:
        if t.startswith("["):
            a, _, p = t[1:].partition("]:")
        else:
            a, _, p = t.rpartition(":")
        ip = ipaddress.ip_address(a)
        port = int(p)
    except ValueError:
        raise ConfigError(f"backend: {text!r} is not ADDR:PORT (IPv6: [ADDR]:PORT)",
                          key="backend") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"backend: {port} is not a port from 1 to 65535", key="backend")
    return str(ip), port


@dataclass
class Backend:
    """One backend of a service: where flows go, with how much weight."""

    addr: str
    port: int
    weight: int = 1
    state: str = "up"

    @property
    def name(self) -> str:
        """``ADDR:PORT``."""
        return backend_name(self.addr, self.port)

    def validate(self, where: str, family: int) -> None:
        """Check every field; raise ConfigError naming it."""
        ip = _addr(self.addr, "addr", where)
        if ip.version != family:
            raise ConfigError(f"{where}: addr: {self.addr} is IPv{ip.version} but the VIP is "
                              f"IPv{family}", key="addr")
        self.addr = str(ip)
        _port(self.port, "port", where)
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= MAX_WEIGHT:
            raise ConfigError(f"{where}: weight: {w!r} is not a whole number from 0 to "
                              f"{MAX_WEIGHT}", key="weight")
        if self.state not in STATES:
            raise ConfigError(f"{where}: state: {self.state!r} is not one of "
                              f"{', '.join(STATES)}", key="state")

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready."""
        d: dict[str, Any] = {"addr": self.addr, "port": self.port, "weight": self.weight}
        if self.state != "up":
            d["state"] = self.state
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Backend:
        """From a mapping; unknown keys refused by name."""
        _keys(d, BACKEND_KEYS, where)
        for k in ("addr", "port"):
            if k not in d:
                raise ConfigError(f"{where}: needs '{k}'", key=k)
        return cls(**dict(d))


@dataclass
class Service:
    """A VIP, port and protocol spread over backends by one algorithm."""

    name: str
    vip: str
    port: int
    proto: str = "tcp"
    algorithm: str = "maglev"
    table_size: int = DEFAULT_TABLE
    snat: str | None = None
    backends: list[Backend] = field(default_factory=list)

    @property
    def family(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.vip).version

    def validate(self) -> None:
        """Check every field of the service and its backends; raise ConfigError naming it."""
        from ..stages import check_name
        check_name(self.name, "name")
        where = f"service '{self.name}'"
        ip = _addr(self.vip, "vip", where)
        self.vip = str(ip)
        _port(self.port, "port", where)
        if self.proto not in PROTOS:
            raise ConfigError(f"{where}: proto: {self.proto!r} is not tcp or udp", key="proto")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}: algorithm: {self.algorithm!r} is not one of "
                              f"{', '.join(ALGORITHMS)}", key="algorithm")
        t = self.table_size
        if isinstance(t, bool) or not isinstance(t, int) or not _is_prime(t) or t > MAX_TABLE:
            raise ConfigError(f"{where}: table_size: {t!r} is not a prime up to {MAX_TABLE} "
                              "(65537, 655373, ...)", key="table_size")
        if self.snat is not None:
            s = _addr(self.snat, "snat", where)
            if s.version != ip.version:
                raise ConfigError(f"{where}: snat: {self.snat} is not IPv{ip.version} like "
                                  "the VIP", key="snat")
            self.snat = str(s)
        if not isinstance(self.backends, list):
            raise ConfigError(f"{where}: backends must be a list", key="backends")
        seen = set()
        for i, b in enumerate(self.backends):
            try:
                if not isinstance(b, Backend):
                    b = self.backends[i] = Backend.from_dict(b, f"{where}: backend {i}")
                b.validate(f"{where}: backend {b.name if isinstance(b.port, int) else i}",
                           ip.version)
            except ConfigError as e:
                raise _in_backend(e, i) from None
            if b.name in seen:
                raise ConfigError(f"{where}: backend {b.name} is listed twice", key="backends")
            seen.add(b.name)

    def backend(self, name: str) -> Backend:
        """The backend named ``ADDR:PORT``."""
        addr, port = parse_backend_name(name)
        for b in self.backends:
            if b.addr == addr and b.port == port:
                return b
        from ..errors import NotFound
        raise NotFound(f"service '{self.name}' has no backend {name} (backends: "
                       f"{', '.join(b.name for b in self.backends) or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready."""
        d: dict[str, Any] = {"name": self.name, "vip": self.vip, "port": self.port,
                             "proto": self.proto, "algorithm": self.algorithm}
        if self.algorithm == "maglev" and self.table_size != DEFAULT_TABLE:
            d["table_size"] = self.table_size
        if self.snat:
            d["snat"] = self.snat
        d["backends"] = [b.to_dict() for b in self.backends]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "service") -> Service:
        """From a mapping (YAML); unknown keys refused by name; validated."""
        _keys(d, SERVICE_KEYS, where)
        for k in ("name", "vip", "port"):
            if k not in d:
                raise ConfigError(f"{where}: needs '{k}'", key=k)
        args = dict(d)
        bks = args.pop("backends", []) or []
        if not isinstance(bks, list):
            raise ConfigError(f"{where}: backends must be a list", key="backends")
        svc = cls(**args)
        svc.backends = []
        for i, b in enumerate(bks):
            try:
                svc.backends.append(Backend.from_dict(b, f"service '{svc.name}': backend {i}"))
            except ConfigError as e:
                raise _in_backend(e, i) from None
        svc.validate()
        return svc


def _in_backend(e: ConfigError, i: int) -> ConfigError:
    """``e`` with its path inside backend ``i`` (YAML errors then point at its line)."""
    if e.path and e.path[0] == "backends":
        return e
    return ConfigError(e.message, key=e.key, path=("backends", i) + ((e.key,) if e.key else ()))
