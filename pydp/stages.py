"""The stage types a pipeline is built from, with their schemas.

Each class validates its own fields (raising :class:`ConfigError` naming the
key) and knows how to configure its C counterpart. YAML and the Python API
both construct these classes, so they produce the same validated object.
Edge names and drop reasons come from the C core, which counts them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ._core import cstr, ffi, lib
from .errors import ConfigError

if TYPE_CHECKING:
    from .pipeline import Pipeline

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,62}$")


def check_name(value: Any, key: str) -> str:
    """Validate a stage, port or next-hop name."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigError(f"{key}: {value!r} is not a valid name (letters, digits, _ . -; "
                          "starts with a letter or _)", key=key)
    return value


def parse_mac(value: Any, key: str) -> bytes:
    """Parse 'aa:bb:cc:dd:ee:ff' into 6 bytes."""
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise ConfigError(f"{key}: {value!r} is not a MAC address like 02:00:00:00:00:01",
                          key=key)
    return bytes(int(x, 16) for x in value.split(":"))


def _c_names(fn: Any, type_: str) -> tuple[str, ...]:
    out = []
    i = 0
    while True:
        p = fn(type_.encode(), i)
        if p == ffi.NULL:
            return tuple(out)
        out.append(cstr(p))
        i += 1


def stage_edges(type_: str) -> tuple[str, ...]:
    """Edge names of a stage type, as the C core defines them ('next' first)."""
    return _c_names(lib.pd_stage_type_edge, type_)


def stage_drops(type_: str) -> tuple[str, ...]:
    """Drop reasons a stage type counts, as the C core defines them."""
    return _c_names(lib.pd_stage_type_drop, type_)


@dataclass
class Stage:
    """Base of every stage: a name and the edges to the stages that follow."""

    TYPE: ClassVar[str] = ""
    NEEDS_NEXT: ClassVar[bool] = True
    NEEDS_PARSE: ClassVar[bool] = False

    name: str

    # -- schema ---------------------------------------------------------------
    @classmethod
    def edge_names(cls) -> tuple[str, ...]:
        """The edges this type may link (from the C core)."""
        return stage_edges(cls.TYPE)

    @classmethod
    def keys(cls) -> list[str]:
        """YAML keys this stage type accepts besides 'type'."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stage:
        """Build from a mapping; unknown keys are refused by name."""
        allowed = set(cls.keys())
        for k in d:
            if k not in allowed:
                raise ConfigError(f"stage type '{cls.TYPE}' has no key '{k}' (allowed: "
                                  f"{', '.join(sorted(allowed | {'type'}))})", key=k)
        if "name" not in d:
            raise ConfigError("stage needs a 'name'", key="name")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"stage '{d.get('name')}': {e}") from None

    def edges(self) -> dict[str, str]:
        """The linked edges: edge name -> next stage name."""
        return {e: getattr(self, e) for e in self.edge_names()
                if getattr(self, e, None) is not None}

    def to_dict(self) -> dict[str, Any]:
        """The stage as YAML-ready data."""
        d: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or v == [] or (f.default is not dataclasses.MISSING and v == f.default
                                        and f.name != "name"):
                continue
            d[f.name] = [x.to_dict() if hasattr(x, "to_dict") else x for x in v] \
                if isinstance(v, list) else v
        return d

    # -- checks and C configuration -------------------------------------------------
    def validate(self, pl: Pipeline) -> None:
        """Check fields against the pipeline (ports, stages); raise ConfigError."""
        check_name(self.name, "name")
        if self.NEEDS_NEXT and getattr(self, "next", None) is None:
            raise ConfigError(f"stage '{self.name}' ({self.TYPE}) needs 'next'", key="next")
        for edge, target in self.edges().items():
            if target not in pl.stage_names():
                raise ConfigError(f"stage '{self.name}': {edge}: no stage named '{target}'",
                                  key=edge)
            if target == self.name:
                raise ConfigError(f"stage '{self.name}': {edge} points to itself", key=edge)

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Push this stage's settings into the C pipeline ``cp`` (stage index ``idx``)."""

    def _port(self, pl: Pipeline, key: str) -> None:
        value = getattr(self, key)
        if value not in pl.ports:
            raise ConfigError(f"stage '{self.name}': {key}: no port named {value!r} "
                              f"(ports: {', '.join(pl.ports)})", key=key)


@dataclass
class Parse(Stage):
    """Walk L2-L4 headers; drop malformed packets with a reason.

    Edges: ``next`` and optional ``ipv4``, ``ipv6``, ``arp``, ``other``
    (each defaults to next).
    """

    TYPE: ClassVar[str] = "parse"
    next: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    arp: str | None = None
    other: str | None = None
    verify_checksum: bool = True

    def validate(self, pl: Pipeline) -> None:
        """Check edges and the checksum flag."""
        super().validate(pl)
        if not isinstance(self.verify_checksum, bool):
            raise ConfigError(f"stage '{self.name}': verify_checksum must be true or false",
                              key="verify_checksum")

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Set checksum verification."""
        from ._core import check
        check(lib.pd_parse_config(cp, idx, int(self.verify_checksum)))


@dataclass
class Forward(Stage):
    """Send every packet out of ``port``, rewriting MACs.

    ``src_mac`` defaults to the port's own MAC (``keep_src_mac: true`` leaves
    the source MAC alone, as a bridge does); ``dst_mac`` is left as is
    unless set.
    """

    TYPE: ClassVar[str] = "forward"
    NEEDS_NEXT: ClassVar[bool] = False
    port: str = ""
    src_mac: str | None = None
    dst_mac: str | None = None
    keep_src_mac: bool = False

    def validate(self, pl: Pipeline) -> None:
        """Check the port and MACs."""
        super().validate(pl)
        self._port(pl, "port")
        for k in ("src_mac", "dst_mac"):
            if getattr(self, k) is not None:
                parse_mac(getattr(self, k), k)
        if not isinstance(self.keep_src_mac, bool):
            raise ConfigError(f"stage '{self.name}': keep_src_mac must be true or false",
                              key="keep_src_mac")
        if self.keep_src_mac and self.src_mac:
            raise ConfigError(f"stage '{self.name}': src_mac and keep_src_mac exclude each "
                              "other", key="keep_src_mac")

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Set port and MACs."""
        from ._core import check
        src = parse_mac(self.src_mac, "src_mac") if self.src_mac else ffi.NULL
        dst = parse_mac(self.dst_mac, "dst_mac") if self.dst_mac else ffi.NULL
        check(lib.pd_forward_config(cp, idx, ports[self.port], src, dst,
                                   int(self.keep_src_mac)))


@dataclass
class NextHop:
    """An l3route next hop: out of ``port`` to ``dst_mac``."""

    name: str
    port: str
    dst_mac: str
    src_mac: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready data."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Route:
    """An l3route route: ``prefix`` (IPv4 or IPv6 CIDR) via next hop ``via``."""

    prefix: str
    via: str

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready data."""
        return dataclasses.asdict(self)


def _items(cls: type, value: Any, key: str, stage: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"stage '{stage}': {key} must be a list", key=key, path=(key,))
    out = []
    names = [f.name for f in dataclasses.fields(cls)]
    for i, v in enumerate(value):
        if isinstance(v, cls):
            out.append(v)
            continue
        if not isinstance(v, dict):
            raise ConfigError(f"stage '{stage}': {key}[{i}] must be a mapping", key=key,
                              path=(key, i))
        for k in v:
            if k not in names:
                raise ConfigError(f"stage '{stage}': {key}[{i}] has no key '{k}' "
                                  f"(allowed: {', '.join(names)})", key=k, path=(key, i, k))
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in v and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"stage '{stage}': {key}[{i}] needs {', '.join(missing)}",
                              key=missing[0], path=(key, i))
        out.append(cls(**v))
    return out


@dataclass
class L3Route(Stage):
    """Longest-prefix-match routing (rte_lpm / rte_lpm6) with TTL handling.

    Needs a parse stage before it. Drops: not-ip, no-route, ttl-exceeded.
    Routes can be replaced while running (:meth:`pydp.Dataplane.set_routes`).
    """

    TYPE: ClassVar[str] = "l3route"
    NEEDS_NEXT: ClassVar[bool] = False
    NEEDS_PARSE: ClassVar[bool] = True
    nexthops: list = field(default_factory=list)
    routes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nexthops = _items(NextHop, self.nexthops, "nexthops", self.name)
        self.routes = _items(Route, self.routes, "routes", self.name)

    def validate(self, pl: Pipeline) -> None:
        """Check next hops (port, MACs, unique names) and route prefixes."""
        super().validate(pl)
        seen: set[str] = set()
        for i, nh in enumerate(self.nexthops):
            where = f"stage '{self.name}': next hop '{nh.name}'"
            try:
                check_name(nh.name, "name")
                if nh.name in seen:
                    raise ConfigError(f"{where} is defined twice", key="name")
                seen.add(nh.name)
                if nh.port not in pl.ports:
                    raise ConfigError(f"{where}: port: no port named {nh.port!r}", key="port")
                parse_mac(nh.dst_mac, "dst_mac")
                if nh.src_mac is not None:
                    parse_mac(nh.src_mac, "src_mac")
            except ConfigError as e:
                msg = e.message if e.message.startswith("stage ") else f"{where}: {e.message}"
                raise ConfigError(msg, key=e.key, path=("nexthops", i, e.key)) from None
        for i, r in enumerate(self.routes):
            try:
                self.parse_prefix(r.prefix)
            except ConfigError as e:
                raise ConfigError(e.message, key="prefix", path=("routes", i, "prefix")) from None
            if r.via not in seen:
                raise ConfigError(f"stage '{self.name}': route {r.prefix}: via: no next hop "
                                  f"named {r.via!r}", key="via", path=("routes", i, "via"))

    def parse_prefix(self, prefix: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """Parse a CIDR prefix, naming the route on error."""
        try:
            return ipaddress.ip_network(str(prefix), strict=False)
        except ValueError as e:
            raise ConfigError(f"stage '{self.name}': route prefix {prefix!r}: {e}",
                              key="prefix") from None

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Build and publish the LPM tables."""
        from ._core import check
        nh_index = {nh.name: i for i, nh in enumerate(self.nexthops)}
        nhs = ffi.new("struct pd_nexthop[]", max(1, len(self.nexthops)))
        for i, nh in enumerate(self.nexthops):
            nhs[i].port = ports[nh.port]
            ffi.memmove(nhs[i].dst_mac, parse_mac(nh.dst_mac, "dst_mac"), 6)
            if nh.src_mac:
                ffi.memmove(nhs[i].src_mac, parse_mac(nh.src_mac, "src_mac"), 6)
                nhs[i].has_src_mac = 1
        routes = ffi.new("struct pd_route[]", max(1, len(self.routes)))
        for i, r in enumerate(self.routes):
            net = self.parse_prefix(r.prefix)
            routes[i].family = net.version
            routes[i].depth = net.prefixlen
            ffi.memmove(routes[i].addr, net.network_address.packed, len(net.network_address.packed))
            routes[i].nexthop = nh_index[r.via]
        check(lib.pd_l3route_commit(cp, idx, routes, len(self.routes), nhs, len(self.nexthops)))


@dataclass
class Count(Stage):
    """Count packets and bytes, pass everything to ``next``."""

    TYPE: ClassVar[str] = "count"
    next: str | None = None


@dataclass
class Mirror(Stage):
    """Send a copy of each packet out of ``port``; the original goes to ``next``."""

    TYPE: ClassVar[str] = "mirror"
    next: str | None = None
    port: str = ""

    def validate(self, pl: Pipeline) -> None:
        """Check the mirror port."""
        super().validate(pl)
        self._port(pl, "port")

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Set the mirror port."""
        from ._core import check
        check(lib.pd_mirror_config(cp, idx, ports[self.port]))


@dataclass
class Drop(Stage):
    """Drop everything (reason: drop-stage)."""

    TYPE: ClassVar[str] = "drop"
    NEEDS_NEXT: ClassVar[bool] = False


@dataclass
class Policy(Stage):
    """Zero-trust allow/deny on the 5-tuple (rte_acl), published with RCU.

    Allowed packets go to ``next``; non-IP packets (ARP...) to ``other``
    (default: next). Drops: policy-deny, default-deny (also everything IP
    before a first commit), flow-table-full, conntrack-error. Rules come
    compiled (:meth:`use`, or :func:`pydp.acl.commit` at run time) or from
    the policy file ``policy`` through :func:`pydp.acl.load_policy`; with
    neither the stage denies all IP. ``conntrack``: the name of a conntrack
    stage every path into this one passes; packets of flows it knows pass
    without a lookup, and new allowed flows are confirmed into its table.
    """

    TYPE: ClassVar[str] = "policy"
    NEEDS_PARSE: ClassVar[bool] = True
    next: str | None = None
    other: str | None = None
    conntrack: str | None = None
    policy: str | None = None

    def __post_init__(self) -> None:
        self._compiled: Any = None
        self._pl: Pipeline | None = None

    def use(self, rules: list, n_ids: int | None = None,
            default_allow: bool = False) -> Policy:
        """Commit these compiled rules when the dataplane starts.

        ``rules``: :class:`pydp.acl.AclRule` objects, or an array from
        :func:`pydp.acl.rules_array` / :func:`pydp.policy.compile_policy_array`.
        """
        import numpy as np

        from .acl import CompiledPolicy
        self._compiled = CompiledPolicy(rules if isinstance(rules, np.ndarray) else list(rules),
                                        n_ids, default_allow)
        return self

    def policy_path(self) -> str | None:
        """The policy file, relative paths taken from the pipeline file's folder."""
        base = getattr(self, "base_dir", None)  # set by Pipeline.load
        if self.policy and base and not os.path.isabs(self.policy):
            return os.path.join(base, self.policy)
        return self.policy

    def validate(self, pl: Pipeline) -> None:
        """Check the edges, the policy path and that conntrack guards every way in."""
        super().validate(pl)
        if self.policy is not None and not isinstance(self.policy, str):
            raise ConfigError(f"stage '{self.name}': policy must be a file name", key="policy")
        if self.conntrack is not None:
            ct = self.conntrack
            if ct not in pl.stage_names():
                raise ConfigError(f"stage '{self.name}': conntrack: no stage named '{ct}'",
                                  key="conntrack")
            if pl.stage(ct).TYPE != "conntrack":
                raise ConfigError(f"stage '{self.name}': conntrack: '{ct}' is a "
                                  f"{pl.stage(ct).TYPE}, not a conntrack stage", key="conntrack")
            if getattr(pl.stage(ct), "mode", "confirm") != "confirm":
                # in auto mode every first packet has a flow before policy sees it
                raise ConfigError(f"stage '{self.name}': conntrack: '{ct}' must run in mode "
                                  "confirm, so that only flows the policy allows are created",
                                  key="conntrack")
            # the flow mark (pd_meta aux) is only meaningful behind conntrack
            for port, start in pl.input_map().items():
                todo, seen = [start], set()
                while todo:
                    n = todo.pop()
                    if n in seen or n == ct:
                        continue
                    if n == self.name:
                        raise ConfigError(
                            f"stage '{self.name}': conntrack: packets from port '{port}' "
                            f"can reach it without passing '{ct}'", key="conntrack")
                    seen.add(n)
                    todo.extend(pl.stage(n).edges().values())
        self._pl = pl

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Link conntrack, then compile and publish the rules."""
        from . import acl
        from ._core import check
        ct = -1
        if self.conntrack is not None and self._pl is not None:
            # the C stages are added in topological order (Dataplane._build)
            ct = [s.name for s in self._pl.order()].index(self.conntrack)
        check(lib.pd_policy_config(cp, idx, ct))
        pol = self._compiled
        if pol is None:
            path = self.policy_path()
            pol = acl.load_policy(path) if path else acl.CompiledPolicy()
        acl.commit(cp, idx, pol.rules, pol.ids(), pol.default_allow)


@dataclass
class Conntrack(Stage):
    """The flow table: both directions of a connection share one entry.

    Needs a parse stage before it. Marks each IP packet with its flow (and
    whether it is a reply) for the stages after it; non-IP packets pass
    unmarked. ``mode: auto`` creates a flow for every new packet and drops
    with ``table-full`` once ``capacity`` flows exist; ``mode: confirm``
    only looks up, and a policy stage creates the flows it allows.
    ``timeouts``: idle seconds before a flow expires, per kind
    (``tcp_established`` 300, ``tcp_other`` 30, ``udp`` 30 (and every
    protocol but TCP and ICMP), ``icmp`` 10); per TCP state
    ``tcp_syn_sent``, ``tcp_syn_recv`` (the server answered, the client
    has not: short, against SYN floods), ``tcp_fin_wait``,
    ``tcp_time_wait`` (default: tcp_other) and ``tcp_close`` (after a RST;
    default: tcp_other, at most 10); flows age when :func:`pydp.flows.expire` runs. ``full``:
    ``drop`` (new flows are dropped with table-full) or ``evict`` (the least
    recently used flow makes room; closing flows go first). Read the table
    with :func:`pydp.flows.flows`.
    """

    TYPE: ClassVar[str] = "conntrack"
    NEEDS_PARSE: ClassVar[bool] = True
    MODES: ClassVar[tuple[str, ...]] = ("auto", "confirm")
    FULL: ClassVar[tuple[str, ...]] = ("drop", "evict")
    TIMEOUTS: ClassVar[dict[str, float]] = {
        "tcp_established": 300, "tcp_other": 30, "udp": 30, "icmp": 10}
    TCP_TIMEOUTS: ClassVar[tuple[str, ...]] = (
        "tcp_syn_sent", "tcp_syn_recv", "tcp_fin_wait", "tcp_time_wait", "tcp_close")
    MAX_CAPACITY: ClassVar[int] = 1 << 24
    next: str | None = None
    capacity: int = 65536
    mode: str = "auto"
    timeouts: dict | None = None
    full: str = "drop"

    def __post_init__(self) -> None:
        if isinstance(self.timeouts, dict):
            self.timeouts = dict(self.timeouts)  # plain data (YAML gives a LocDict)
        self._nat = False

    def validate(self, pl: Pipeline) -> None:
        """Check capacity, mode, full and timeouts; see whether an lb stage translates."""
        super().validate(pl)
        if self.full not in self.FULL:
            raise ConfigError(f"stage '{self.name}': full must be drop or evict, not "
                              f"{self.full!r}", key="full")
        self._nat = any(getattr(s, "conntrack", None) == self.name and s.TYPE == "lb"
                        for s in pl.stages)
        c = self.capacity
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= self.MAX_CAPACITY:
            raise ConfigError(f"stage '{self.name}': capacity must be a whole number of flows "
                              f"from 1 to {self.MAX_CAPACITY}, not {c!r}", key="capacity")
        if self.mode not in self.MODES:
            raise ConfigError(f"stage '{self.name}': mode must be auto or confirm, not "
                              f"{self.mode!r}", key="mode")
        self.timeouts_ms()

    def timeouts_ms(self) -> list[int]:
        """The four timeouts in milliseconds, in the order pd_conntrack_config takes them."""
        t = dict(self.TIMEOUTS)
        if self.timeouts is not None:
            if not isinstance(self.timeouts, dict):
                raise ConfigError(f"stage '{self.name}': timeouts must map "
                                  f"{', '.join(self.TIMEOUTS)} to seconds", key="timeouts")
            for k, v in self.timeouts.items():
                if k not in self.TIMEOUTS and k not in self.TCP_TIMEOUTS:
                    raise ConfigError(f"stage '{self.name}': timeouts has no key '{k}' "
                                      f"(allowed: "
                                      f"{', '.join([*self.TIMEOUTS, *self.TCP_TIMEOUTS])})",
                                      key=k, path=("timeouts", k))
                if isinstance(v, bool) or not isinstance(v, (int, float)) \
                        or not 0.001 <= v <= 4294967:
                    raise ConfigError(f"stage '{self.name}': timeouts: {k} must be seconds "
                                      f"from 0.001 to 4294967, not {v!r}", key=k,
                                      path=("timeouts", k))
                if k in self.TIMEOUTS:
                    t[k] = v
        order = {"tcp_established": lib.PD_CT_TIMEOUT_TCP_ESTABLISHED,
                 "tcp_other": lib.PD_CT_TIMEOUT_TCP_OTHER, "udp": lib.PD_CT_TIMEOUT_UDP,
                 "icmp": lib.PD_CT_TIMEOUT_ICMP}
        ms = [0] * lib.PD_CT_N_TIMEOUTS
        for k, v in t.items():
            ms[order[k]] = max(1, round(v * 1000))
        return ms

    def all_timeouts_ms(self) -> list[int]:
        """Every timeout in ms in pd_ct_conf order; 0 for a TCP state not named (its default)."""
        ms = self.timeouts_ms() + [0] * len(self.TCP_TIMEOUTS)
        for i, k in enumerate(self.TCP_TIMEOUTS):
            if self.timeouts and k in self.timeouts:
                ms[lib.PD_CT_N_TIMEOUTS + i] = max(1, round(self.timeouts[k] * 1000))
        return ms

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Create the flow table."""
        from ._core import check
        conf = ffi.new("struct pd_ct_conf *")
        conf.capacity = self.capacity
        conf.confirm = int(self.mode == "confirm")
        conf.evict = int(self.full == "evict")
        conf.nat = int(self._nat)
        conf.timeouts_ms = self.all_timeouts_ms()
        check(lib.pd_conntrack_configure(cp, idx, conf))


@dataclass
class LoadBalancer(Stage):
    """Service load balancing (type ``lb``): VIP:port -> backends, DNAT (and SNAT).

    ``conntrack``: the conntrack stage every path into this one passes (it
    keeps each flow's backend, its translated reply tuple and the live
    connection counts of least_conn). ``services``: a list of
    :class:`pydp.lb.Service` mappings (name, vip, port, proto, algorithm
    maglev|wrr|least_conn, table_size, snat, backends [{addr, port, weight,
    state}]). Change them at run time with :class:`pydp.lb.Services`. Drops:
    no-backend, no-flow, nat-table-full, nat-conflict, snat-ports-exhausted.
    """

    TYPE: ClassVar[str] = "lb"
    NEEDS_PARSE: ClassVar[bool] = True
    next: str | None = None
    conntrack: str | None = None
    services: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pl: Pipeline | None = None

    def service_objects(self) -> list:
        """The services as validated :class:`pydp.lb.Service` objects."""
        from .lb.model import Service
        if not isinstance(self.services, list):
            raise ConfigError(f"stage '{self.name}': services must be a list", key="services")
        out, names, keys = [], set(), set()
        for i, d in enumerate(self.services):
            try:
                svc = d if isinstance(d, Service) else Service.from_dict(d, f"service {i}")
                svc.validate()
            except ConfigError as e:
                raise ConfigError(f"stage '{self.name}': {e.message}", key=e.key,
                                  path=("services", i) + (tuple(e.path) if e.path else
                                                          (e.key,) if e.key else ())) from None
            if svc.name in names:
                raise ConfigError(f"stage '{self.name}': service name '{svc.name}' is used "
                                  "twice", key="name", path=("services", i, "name"))
            key = (svc.vip, svc.port, svc.proto)
            if key in keys:
                raise ConfigError(f"stage '{self.name}': service '{svc.name}': "
                                  f"{svc.vip} port {svc.port}/{svc.proto} is already a "
                                  "service", key="vip", path=("services", i, "vip"))
            names.add(svc.name)
            keys.add(key)
            out.append(svc)
        return out

    def validate(self, pl: Pipeline) -> None:
        """Check the edges, the conntrack stage and the services."""
        super().validate(pl)
        ct = self.conntrack
        if ct is None:
            raise ConfigError(f"stage '{self.name}': needs 'conntrack' (the flow table "
                              "that keeps each flow on its backend)", key="conntrack")
        if ct not in pl.stage_names():
            raise ConfigError(f"stage '{self.name}': conntrack: no stage named '{ct}'",
                              key="conntrack")
        if pl.stage(ct).TYPE != "conntrack":
            raise ConfigError(f"stage '{self.name}': conntrack: '{ct}' is a "
                              f"{pl.stage(ct).TYPE}, not a conntrack stage", key="conntrack")
        for port, start in pl.input_map().items():
            todo, seen = [start], set()
            while todo:
                n = todo.pop()
                if n in seen or n == ct:
                    continue
                if n == self.name:
                    raise ConfigError(f"stage '{self.name}': conntrack: packets from port "
                                      f"'{port}' can reach it without passing '{ct}'",
                                      key="conntrack")
                seen.add(n)
                todo.extend(pl.stage(n).edges().values())
        self.service_objects()
        self._pl = pl

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready (services as mappings)."""
        d = super().to_dict()
        if self.services:
            d["services"] = [x.to_dict() for x in self.service_objects()]
        return d

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Link conntrack, publish the services."""
        from ._core import check
        from .lb.table import commit
        assert self._pl is not None
        ct = [s.name for s in self._pl.order()].index(self.conntrack)
        check(lib.pd_lb_config(cp, idx, ct))
        #: backend ids by service and backend name (trace and counters name them)
        self._ids = commit(cp, idx, self.service_objects())


STAGE_TYPES: dict[str, type[Stage]] = {
    c.TYPE: c for c in (Parse, Forward, L3Route, Count, Mirror, Drop, Policy, Conntrack,
                        LoadBalancer)
}


def stage_from_dict(d: dict[str, Any]) -> Stage:
    """Build a stage of ``d['type']`` from a mapping."""
    if not isinstance(d, dict):
        raise ConfigError("a stage must be a mapping with 'name' and 'type'")
    t = d.get("type")
    if t is None:
        raise ConfigError(f"stage '{d.get('name', '?')}' needs a 'type'", key="type")
    cls = STAGE_TYPES.get(t)
    if cls is None:
        raise ConfigError(f"unknown stage type '{t}' (known: {', '.join(STAGE_TYPES)})",
                          key="type")
    return cls.from_dict({k: v for k, v in d.items() if k != "type"})


# -- ESP (IPsec tunnel mode): see pydp/esp.py and csrc/stages/esp_sa.h ------------------
@dataclass
class _Esp(Stage):
    """Shared fields of the two ESP stages: static SAs and the crypto device."""

    NEEDS_PARSE: ClassVar[bool] = True
    DIRECTION: ClassVar[str] = ""
    next: str | None = None
    sas: list = field(default_factory=list)
    crypto: str = "auto"

    def __post_init__(self) -> None:
        from .esp import SA
        if not isinstance(self.sas, list):
            raise ConfigError(f"stage '{self.name}': sas must be a list", key="sas",
                              path=("sas",))
        out = []
        for i, s in enumerate(self.sas):
            if isinstance(s, SA):
                out.append(s)
                continue
            if not isinstance(s, dict):
                raise ConfigError(f"stage '{self.name}': sas[{i}] must be a mapping",
                                  key="sas", path=("sas", i))
            try:
                out.append(SA.from_dict(dict(s)))
            except ConfigError as e:
                raise ConfigError(f"stage '{self.name}': sas[{i}]: {e.message}", key=e.key,
                                  path=("sas", i) + (e.path or ((e.key,) if e.key else ())))\
                    from None
        self.sas = out

    def validate(self, pl: Pipeline) -> None:
        """Check every SA (naming the field), its direction and unique SPIs."""
        from .esp import CRYPTO_DEVICES
        super().validate(pl)
        if self.crypto not in CRYPTO_DEVICES:
            raise ConfigError(f"stage '{self.name}': crypto must be one of "
                              f"{', '.join(CRYPTO_DEVICES)}, not {self.crypto!r}", key="crypto")
        spis: set[int] = set()
        for i, sa in enumerate(self.sas):
            try:
                sa.validate()
            except ConfigError as e:
                raise ConfigError(f"stage '{self.name}': sas[{i}]: {e.message}", key=e.key,
                                  path=("sas", i) + tuple(e.path)) from None
            if sa.direction != self.DIRECTION:
                raise ConfigError(f"stage '{self.name}': sas[{i}]: direction: a {self.TYPE} "
                                  f"stage takes '{self.DIRECTION}' SAs", key="direction",
                                  path=("sas", i, "direction"))
            if sa.spi in spis:
                raise ConfigError(f"stage '{self.name}': sas[{i}]: spi: {sa.spi:#x} is used "
                                  "twice", key="spi", path=("sas", i, "spi"))
            spis.add(sa.spi)

    def configure(self, cp: Any, idx: int, ports: dict[str, int]) -> None:
        """Choose the crypto device and add the static SAs."""
        from . import esp
        esp.configure_stage(cp, idx, self.crypto)
        for sa in self.sas:
            esp.push(cp, idx, sa)


@dataclass
class EspEncrypt(_Esp):
    """ESP tunnel-mode encryption (RFC 4303) on rte_ipsec.

    The SPD picks an outbound SA by the inner packet's selectors (newest SA
    first); out on ``next`` goes the ESP packet with the SA's outer header
    (MACs zero: a forward or l3route stage follows). Drops: not-ip, no-sa,
    sa-expired, seq-exhausted, no-room, crypto-error. SAs: ``sas`` (static
    keys, for interop and tests) and :meth:`pydp.Dataplane.sa_add`.
    """

    TYPE: ClassVar[str] = "esp_encrypt"
    DIRECTION: ClassVar[str] = "out"


@dataclass
class EspDecrypt(_Esp):
    """ESP tunnel-mode decryption with anti-replay on rte_ipsec.

    The SA is found by SPI (and must match the outer addresses); the inner
    packet must match the SA's selectors. Out on ``next`` goes the inner
    packet (MACs zero). Drops: not-esp, unknown-spi, tunnel-mismatch,
    malformed, replayed, out-of-window, auth-failed, selector-mismatch,
    inner-malformed, sa-expired, crypto-error.
    """

    TYPE: ClassVar[str] = "esp_decrypt"
    DIRECTION: ClassVar[str] = "in"


STAGE_TYPES.update({c.TYPE: c for c in (EspEncrypt, EspDecrypt)})
