"""The zero-trust policy model: identities, selectors, rules, default deny.

An *identity* is a named set of labels (``app=web,env=prod``) bound to IPv4
and IPv6 addresses and prefixes. A *rule* allows or denies traffic from the
addresses of the identities one selector picks to those another selector
picks, for some protocols and destination ports. Traffic no rule allows is
dropped (``default: deny``). An explicit deny wins over every allow.

The YAML format (``Policy.load(path)`` / ``Policy.loads(text)``)::

    name: three-tier                 # optional
    description: ...                 # optional
    identities:                      # name -> identity
      web:
        labels: {app: web, env: prod}            # optional; strings (ints are read as text)
        addresses: [10.0.1.0/24, "fd00:1::/64"]  # IPs or CIDRs, host bits clear
        description: ...                         # optional
      db: {labels: {app: db, env: prod}, addresses: [10.0.2.10]}
    rules:                           # a list; every rule has a unique name
      - name: web-to-db
        action: allow                # allow | deny
        from: {app: web}             # a selector, or a list of selectors (their union)
        to: {app: db}
        ports: [{proto: tcp, port: 5432}]   # optional; absent = every protocol and port
        description: ...             # optional
      - {name: no-ssh, action: deny, from: any, to: {env: prod},
         ports: [{proto: tcp, port: 22}]}
    default: deny                    # deny (the default) | allow

Selectors:

- ``any`` or ``{}``: every identity (not addresses that belong to no identity).
- ``{app: web, env: prod}``: every identity whose labels include all of these.
- ``{cidr: 203.0.113.0/24}`` or ``{cidr: [0.0.0.0/0, "::/0"], except: [10.0.0.0/8]}``:
  raw addresses, for peers outside the inventory. The label names ``cidr`` and
  ``except`` are therefore reserved.

Port entries (``ports:`` of a rule is a list of them):

- ``{proto: tcp, port: 5432}``, ``{proto: udp, ports: "1000-2000"}``,
  ``{proto: tcp, ports: [80, 443, "8000-8080"]}``: destination ports (TCP and UDP only).
- ``{proto: icmp}``, ``{proto: 47}``, ``{proto: any}``: a whole protocol.
- The string shorthands ``"tcp/5432"``, ``"udp/1000-2000"``, ``"icmp"`` and ``"any"``
  mean the same.

Protocols are ``tcp``, ``udp``, ``icmp``, ``icmpv6``, ``sctp``, ``gre``, ``esp``,
``ah``, ``any`` or a number 0-255. ``icmp`` (1) applies to IPv4 packets only and
``icmpv6`` (58) to IPv6 packets only.

Matching is by address: a packet matches a rule when its source address is in
an address of an identity (or CIDR) the ``from`` selector picks, its destination
likewise for ``to``, and its protocol and destination port are in one of the
port entries. IPv4 sources never pair with IPv6 destinations.

The same objects from Python (``from`` is spelled ``src`` and ``to`` ``dst``)::

    Policy(identities=[Identity("web", {"app": "web"}, ["10.0.1.0/24"]),
                       Identity("db", {"app": "db"}, ["10.0.2.10"])],
           rules=[Rule("web-to-db", "allow", src={"app": "web"}, dst={"app": "db"},
                       ports=["tcp/5432"])])

Errors are :class:`~pydp.errors.ConfigError`; from YAML they name the file, the
line and the key, and the rule or identity they are in. Unknown keys are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from .. import yamlsrc
from ..errors import ConfigError

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

PROTOCOLS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
                             "icmpv6": 58, "sctp": 132}
PROTO_NAMES: dict[int, str] = {v: k for k, v in PROTOCOLS.items()}
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58
PORT_PROTOS = (TCP, UDP)  # protocols whose destination port a rule can match
ALL_PORTS = (0, 65535)
ACTIONS = ("allow", "deny")
TOP_KEYS = ("name", "description", "identities", "rules", "default")
IDENTITY_KEYS = ("labels", "addresses", "description")
RULE_KEYS = ("name", "action", "from", "to", "ports", "description")
PORT_KEYS = ("proto", "port", "ports")
SELECTOR_CIDR_KEYS = ("cidr", "except")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/+@\[\]-]{0,510}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,252}$")
_RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def _err(msg: str, *path: Any) -> ConfigError:
    """A ConfigError whose key is the last string in ``path``."""
    key = next((p for p in reversed(path) if isinstance(p, str)), None)
    return ConfigError(msg, key=key, path=tuple(path))


def _under(e: ConfigError, *prefix: Any, what: str = "") -> ConfigError:
    """``e`` moved under ``prefix`` (and its message prefixed with ``what``)."""
    path = tuple(prefix) + tuple(e.path)
    key = e.key if e.key is not None else next(
        (p for p in reversed(path) if isinstance(p, str)), None)
    out = ConfigError(what + e.message, key=key, path=path)
    out.stage = e.stage
    return out


def check_name(value: Any, what: str, *path: Any) -> str:
    """Validate an identity or rule name (letters, digits, ``_ . : / + @ [ ] -``)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise _err(f"{what} {value!r} is not a valid name (letters, digits and _ . : / + @ [ ] -, "
                   "at most 511)", *path)
    return value


def parse_proto(value: Any, *path: Any) -> int | None:
    """A protocol name or number as its IP protocol number (``None`` for ``any``)."""
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if 0 <= value <= 255:
            return value
    elif isinstance(value, str):
        v = value.strip().lower()
        if v == "any":
            return None
        if v in PROTOCOLS:
            return PROTOCOLS[v]
        if v.isdigit() and int(v) <= 255:
            return int(v)
    raise _err(f"unknown protocol {value!r} (names: {', '.join(PROTOCOLS)}, any; "
               "or a number 0-255)", *path)


def proto_name(proto: int | None) -> str:
    """``tcp`` for 6, ``any`` for None, the number as text otherwise."""
    if proto is None:
        return "any"
    return PROTO_NAMES.get(proto, str(proto))


def parse_port_range(value: Any, *path: Any) -> tuple[int, int]:
    """``80`` or ``"1000-2000"`` as an inclusive ``(lo, hi)`` range of ports."""
    lo = hi = None
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str):
        m = _RANGE_RE.match(value)
        if m:
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
    if lo is None or hi is None:
        raise _err(f"{value!r} is not a port or a range like \"1000-2000\"", *path)
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
        raise _err(f"port {value!r} is out of range 0-65535", *path)
    if lo > hi:
        raise _err(f"port range {value!r} is empty (start above end)", *path)
    return lo, hi


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent inclusive ranges covering the same ports."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def _range_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def parse_network(value: Any, *path: Any) -> IPNetwork:
    """An address or CIDR (``10.0.2.10``, ``10.0.1.0/24``, ``fd00:1::/64``) as a network."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(value)
    if not isinstance(value, str):
        raise _err(f"{value!r} is not an IP address or CIDR (quote IPv6 in flow lists)", *path)
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise _err(f"{value!r} is not an IP address or CIDR", *path) from None
    raise _err(f"{value!r} has host bits set (did you mean {loose}?)", *path)


def _collapse_one(nets: list[IPNetwork]) -> list[IPNetwork]:
    """Merge one family's prefixes; skips ipaddress' (slow) merge when nothing would change."""
    if len(nets) <= 1:
        return list(nets)
    by = sorted(set(nets), key=lambda n: (int(n.network_address), n.prefixlen))
    prev_start = prev_end = -2
    prev_len = -1
    for n in by:
        start = int(n.network_address)
        end = start + n.num_addresses - 1
        if start <= prev_end + 1 and (
                start <= prev_end  # overlap
                or (n.prefixlen == prev_len and prev_start % (2 * n.num_addresses) == 0)):
            return _cover(by)
        prev_start, prev_end, prev_len = start, end, n.prefixlen
    return by


def _cover(by: list[IPNetwork]) -> list[IPNetwork]:
    """What ``ipaddress.collapse_addresses`` gives (the fewest aligned prefixes covering
    the union, in address order) for prefixes sorted by address, on integers.

    ipaddress' own merge made compiling the 100k-rule mesh benchmark
    (benchmarks/mesh.py: namespace-wide selectors of hundreds of pod /32s)
    take 0.8-1.3 s, most of it here.
    """
    ranges: list[list[int]] = []
    for n in by:
        start = int(n.network_address)
        end = start + n.num_addresses - 1
        if ranges and start <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], end)
        else:
            ranges.append([start, end])
    bits = by[0].max_prefixlen
    make = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    out: list[IPNetwork] = []
    for start, end in ranges:
        while start <= end:
            size = start & -start if start else 1 << bits
            while size > end - start + 1:
                size >>= 1
            out.append(make((start, bits - size.bit_length() + 1)))
            start += size
    return out


def collapse(nets: Iterable[IPNetwork]) -> tuple[list[IPNetwork], list[IPNetwork]]:
    """Split into IPv4 and IPv6 and merge into the fewest prefixes covering the same set."""
    nets = list(nets)
    return (_collapse_one([n for n in nets if n.version == 4]),
            _collapse_one([n for n in nets if n.version == 6]))


def subtract(nets: Iterable[IPNetwork], holes: Iterable[IPNetwork]) -> list[IPNetwork]:
    """The prefixes covering ``nets`` minus ``holes`` (same-family holes only)."""
    todo = list(nets)
    holes = list(holes)
    if not holes:
        v4, v6 = collapse(todo)
        return v4 + v6
    for h in holes:
        nxt: list[IPNetwork] = []
        for n in todo:
            if n.version != h.version or not n.overlaps(h):
                nxt.append(n)
            elif n.subnet_of(h):  # type: ignore[arg-type]
                continue
            else:  # h is inside n
                nxt.extend(n.address_exclude(h))  # type: ignore[arg-type]
        todo = nxt
    v4, v6 = collapse(todo)
    return v4 + v6


def _label_value(value: Any, *path: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _err(f"label value {value!r} must be a string (quote it)", *path)


def parse_labels(value: Any, *path: Any) -> tuple[tuple[str, str], ...]:
    """A mapping of label names to values as sorted ``(name, value)`` pairs."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise _err("labels must be a mapping like {app: web, env: prod}", *path)
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not _LABEL_RE.match(k):
            raise _err(f"{k!r} is not a valid label name", *path, k)
        if k in SELECTOR_CIDR_KEYS:
            raise _err(f"label name '{k}' is reserved for CIDR selectors", *path, k)
        out.append((k, _label_value(v, *path, k)))
    return tuple(sorted(out))


# -- ports ---------------------------------------------------------------------------------
class PortSpec:
    """One port entry: a protocol (``None`` = any) and destination port ranges."""

    __slots__ = ("proto", "ranges")

    def __init__(self, proto: int | str | None = None,
                 ports: Any = None) -> None:
        """``PortSpec("tcp", 5432)``, ``PortSpec(17, "1000-2000")``, ``PortSpec("icmp")``."""
        self.proto = parse_proto(proto, "proto") if proto is not None else None
        if ports is None:
            self.ranges: tuple[tuple[int, int], ...] = (ALL_PORTS,)
            return
        items = ports if isinstance(ports, (list, tuple)) else [ports]
        if not items:
            raise _err("ports: the list is empty", "ports")
        rng = [parse_port_range(p, "ports", i) if isinstance(ports, (list, tuple))
               else parse_port_range(p, "ports") for i, p in enumerate(items)]
        if self.proto not in PORT_PROTOS:
            raise _err(f"ports need proto tcp or udp (not {proto_name(self.proto)})", "ports")
        self.ranges = merge_ranges(rng)

    @classmethod
    def parse(cls, value: Any) -> PortSpec:
        """From ``{proto, port | ports}``, ``"tcp/80"``, ``"tcp/1000-2000"``, ``"icmp"``."""
        if isinstance(value, PortSpec):
            return value
        if isinstance(value, str):
            proto, sep, rng = value.partition("/")
            return cls(parse_proto(proto, "proto"), rng if sep else None)
        if isinstance(value, int) and not isinstance(value, bool):
            raise _err(f"port entry {value!r} needs a protocol: {{proto: tcp, port: {value}}}")
        if not isinstance(value, Mapping):
            raise _err(f"port entry {value!r} must be a mapping like {{proto: tcp, port: 80}} "
                       "or a string like \"tcp/80\"")
        for k in value:
            if k not in PORT_KEYS:
                raise _err(f"unknown key '{k}' in a port entry (allowed: "
                           f"{', '.join(PORT_KEYS)})", k)
        if "proto" not in value:
            raise _err("a port entry needs 'proto' (tcp, udp, icmp, icmpv6, any or a number)")
        if "port" in value and "ports" in value:
            raise _err("give either 'port' or 'ports', not both", "ports")
        key = "port" if "port" in value else "ports"
        proto = parse_proto(value["proto"], "proto")
        if key not in value:
            return cls(proto)
        try:
            return cls(proto, value[key])
        except ConfigError as e:
            raise ConfigError(e.message, key=key, path=(key,) + tuple(e.path[1:])) from None

    @property
    def all_ports(self) -> bool:
        """True when every destination port (or a port-less protocol) matches."""
        return self.ranges == (ALL_PORTS,)

    def applies_to(self, family: int) -> bool:
        """Whether this entry can match packets of IP version ``family``."""
        return not ((self.proto == ICMP and family == 6) or (self.proto == ICMPV6 and family == 4))

    def matches(self, proto: int, dport: int) -> bool:
        """Whether a packet of protocol ``proto`` to port ``dport`` matches."""
        if self.proto is None:
            return True
        if proto != self.proto:
            return False
        return self.all_ports or any(lo <= dport <= hi for lo, hi in self.ranges)

    def to_data(self) -> dict[str, Any]:
        """YAML-ready mapping."""
        d: dict[str, Any] = {"proto": proto_name(self.proto)}
        if not self.all_ports:
            if len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]:
                d["port"] = self.ranges[0][0]
            elif len(self.ranges) == 1:
                d["ports"] = _range_text(*self.ranges[0])
            else:
                d["ports"] = [lo if lo == hi else _range_text(lo, hi) for lo, hi in self.ranges]
        return d

    def __str__(self) -> str:
        if self.all_ports:
            return proto_name(self.proto)
        return f"{proto_name(self.proto)}/" + ",".join(_range_text(*r) for r in self.ranges)

    def __repr__(self) -> str:
        return f"PortSpec({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortSpec) and (self.proto, self.ranges) == (other.proto,
                                                                              other.ranges)

    def __hash__(self) -> int:
        return hash((self.proto, self.ranges))


def _ranges_sub(a: tuple[tuple[int, int], ...],
                b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Merged ranges ``a`` minus merged ranges ``b``."""
    out = []
    for lo, hi in a:
        for blo, bhi in b:
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


def _ranges_and(a: tuple[tuple[int, int], ...],
                b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Merged ranges in both ``a`` and ``b``."""
    return merge_ranges((max(lo, blo), min(hi, bhi)) for lo, hi in a for blo, bhi in b
                        if max(lo, blo) <= min(hi, bhi))


class PortSet:
    """A set of (protocol, destination port) pairs: what a pair of endpoints may send.

    Protocols without ports hold the whole range 0-65535. Immutable; supports
    ``|``, ``&``, ``-``, ``==`` and truth (empty is false).
    """

    __slots__ = ("_m",)

    def __init__(self, items: Mapping[int, Iterable[tuple[int, int]]] | None = None) -> None:
        """From ``{proto: [(lo, hi), ...]}``."""
        m = {}
        for p, rng in (items or {}).items():
            r = merge_ranges(rng)
            if r:
                m[p] = r
        self._m: dict[int, tuple[tuple[int, int], ...]] = m

    @classmethod
    def all(cls) -> PortSet:
        """Every protocol and port."""
        return cls({p: (ALL_PORTS,) for p in range(256)})

    @classmethod
    def of(cls, specs: Iterable[PortSpec], family: int | None = None) -> PortSet:
        """The union of port entries (those that apply to ``family``, if given)."""
        m: dict[int, list[tuple[int, int]]] = {}
        for s in specs:
            if family is not None and not s.applies_to(family):
                continue
            if s.proto is None:
                return cls.all()
            m.setdefault(s.proto, []).extend(s.ranges)
        return cls(m)

    def items(self) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
        """``(proto, ranges)`` sorted by protocol."""
        return sorted(self._m.items())

    def __or__(self, other: PortSet) -> PortSet:
        m = dict(self._m)
        for p, r in other._m.items():
            m[p] = merge_ranges(m.get(p, ()) + r)
        return PortSet(m)

    def __and__(self, other: PortSet) -> PortSet:
        return PortSet({p: _ranges_and(r, other._m[p]) for p, r in self._m.items()
                        if p in other._m})

    def __sub__(self, other: PortSet) -> PortSet:
        return PortSet({p: _ranges_sub(r, other._m[p]) if p in other._m else r
                        for p, r in self._m.items()})

    def __bool__(self) -> bool:
        return bool(self._m)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortSet) and self._m == other._m

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._m.items())))

    def to_specs(self) -> list[PortSpec]:
        """The set as port entries (one ``any`` entry for everything)."""
        if self == PortSet.all():
            return [PortSpec(None)]
        return [PortSpec(p, [_range_text(*x) for x in r] if r != (ALL_PORTS,) else None)
                for p, r in self.items()]

    def _text(self) -> str:
        parts = []
        for p, r in self.items():
            parts.append(proto_name(p) if r == (ALL_PORTS,)
                         else f"{proto_name(p)}/" + ",".join(_range_text(*x) for x in r))
        return " ".join(parts)

    def __str__(self) -> str:
        if not self._m:
            return "nothing"
        if len(self._m) > 128:
            rest = PortSet.all() - self
            return "any" if not rest else f"any except {rest._text()}"
        return self._text()

    def __repr__(self) -> str:
        return f"PortSet({str(self)!r})"


# -- selectors ------------------------------------------------------------------------------
class Selector:
    """Picks identities by labels (all equal; none = any identity) or raw CIDRs."""

    __slots__ = ("labels", "cidrs", "excepts")

    def __init__(self, labels: Mapping[str, Any] | None = None,
                 cidrs: Iterable[Any] = (), excepts: Iterable[Any] = ()) -> None:
        """``Selector({"app": "web"})``, ``Selector()`` (any), ``Selector(cidrs=[...])``."""
        self.labels = parse_labels(labels)
        self.cidrs = tuple(parse_network(c, "cidr", i) for i, c in enumerate(cidrs))
        self.excepts = tuple(parse_network(c, "except", i) for i, c in enumerate(excepts))
        if self.cidrs and self.labels:
            raise _err("a selector has either labels or 'cidr', not both", "cidr")
        if self.excepts and not self.cidrs:
            raise _err("'except' needs 'cidr'", "except")
        for i, x in enumerate(self.excepts):
            if not any(x.version == c.version and x.subnet_of(c) for c in self.cidrs):
                raise _err(f"except {x} is not inside any cidr of the selector", "except", i)

    @classmethod
    def any(cls) -> Selector:
        """Every identity."""
        return cls()

    @classmethod
    def cidr(cls, *cidrs: Any, excepts: Iterable[Any] = ()) -> Selector:
        """Raw addresses: ``Selector.cidr("203.0.113.0/24", excepts=["203.0.113.8/29"])``."""
        return cls(cidrs=cidrs, excepts=excepts)

    @classmethod
    def parse(cls, value: Any) -> Selector:
        """From ``"any"``, ``{}``, ``{app: web}`` or ``{cidr: ..., except: [...]}``."""
        if isinstance(value, Selector):
            return value
        if isinstance(value, str):
            if value.strip().lower() == "any":
                return cls()
            raise _err(f"selector {value!r}: write 'any', a mapping of labels like "
                       "{app: web}, or {cidr: 203.0.113.0/24}")
        if value is None:
            raise _err("empty selector: write 'any' or {} for every identity")
        if not isinstance(value, Mapping):
            raise _err(f"selector {value!r} must be 'any', a mapping of labels or {{cidr: ...}}")
        if "cidr" in value or "except" in value:
            for k in value:
                if k not in SELECTOR_CIDR_KEYS:
                    raise _err(f"unknown key '{k}' in a cidr selector (allowed: cidr, except)", k)
            if "cidr" not in value:
                raise _err("'except' needs 'cidr'", "except")

            def items(k: str) -> list[Any]:
                v = value.get(k, [])
                if isinstance(v, (list, tuple)):
                    if k == "cidr" and not v:
                        raise _err("cidr: the list is empty", k)
                    return list(v)
                return [v]
            return cls(cidrs=items("cidr"), excepts=items("except"))
        return cls(labels=value)

    @property
    def is_any(self) -> bool:
        """True for the selector of every identity."""
        return not self.labels and not self.cidrs

    @property
    def is_cidr(self) -> bool:
        """True for a raw-address selector."""
        return bool(self.cidrs)

    def matches(self, identity: Identity) -> bool:
        """Whether this (label) selector picks ``identity`` (never for CIDR selectors)."""
        if self.cidrs:
            return False
        own = identity.labels
        return all(own.get(k) == v for k, v in self.labels)

    def networks(self) -> list[IPNetwork]:
        """A CIDR selector's addresses (cidr minus except) as disjoint prefixes."""
        return subtract(self.cidrs, self.excepts)

    def to_data(self) -> Any:
        """YAML-ready form."""
        if self.cidrs:
            d: dict[str, Any] = {"cidr": str(self.cidrs[0]) if len(self.cidrs) == 1
                                 else [str(c) for c in self.cidrs]}
            if self.excepts:
                d["except"] = [str(c) for c in self.excepts]
            return d
        if not self.labels:
            return "any"
        return dict(self.labels)

    def __str__(self) -> str:
        if self.cidrs:
            s = "cidr:" + ",".join(str(c) for c in self.cidrs)
            return s + (" except " + ",".join(str(c) for c in self.excepts) if self.excepts
                        else "")
        if not self.labels:
            return "any"
        return ",".join(f"{k}={v}" for k, v in self.labels)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"

    def _key(self) -> tuple:
        return (self.labels, self.cidrs, self.excepts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _selectors(value: Any, key: str) -> tuple[Selector, ...]:
    """One selector or a non-empty list of them (the union)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise _err(f"{key}: the list of selectors is empty (write 'any' for every identity)",
                       key)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(Selector.parse(v))
            except ConfigError as e:
                raise _under(e, key, i, what=f"{key}[{i}]: ") from None
        return tuple(dict.fromkeys(out))
    try:
        return (Selector.parse(value),)
    except ConfigError as e:
        raise _under(e, key, what=f"{key}: ") from None


# -- identities and rules -------------------------------------------------------------------------
class Identity:
    """A named label set bound to addresses."""

    __slots__ = ("name", "labels", "addresses", "description")

    def __init__(self, name: str, labels: Mapping[str, Any] | None = None,
                 addresses: Iterable[Any] = (), description: str = "") -> None:
        """Create and validate; ``addresses`` are IPs or CIDRs (strings or ipaddress objects)."""
        self.name = check_name(name, "identity")
        try:
            self.labels: dict[str, str] = dict(parse_labels(labels, "labels"))
            if isinstance(addresses, (str, bytes)) or not isinstance(addresses, Iterable):
                raise _err("addresses must be a list of IPs or CIDRs", "addresses")
            nets = [parse_network(a, "addresses", i) for i, a in enumerate(addresses)]
            if not isinstance(description, str):
                raise _err("description must be a string", "description")
        except ConfigError as e:
            raise _under(e, what=f"identity '{name}': ") from None
        self.addresses: tuple[IPNetwork, ...] = tuple(dict.fromkeys(nets))
        self.description = description

    @classmethod
    def from_data(cls, name: str, data: Any) -> Identity:
        """From a YAML mapping ``{labels, addresses, description}``."""
        check_name(name, "identity")
        if not isinstance(data, Mapping):
            raise _err(f"identity '{name}' must be a mapping with labels and addresses")
        for k in data:
            if k not in IDENTITY_KEYS:
                raise _err(f"identity '{name}': unknown key '{k}' (allowed: "
                           f"{', '.join(IDENTITY_KEYS)})", k)
        return cls(name, data.get("labels"), data.get("addresses", []) or [],
                   data.get("description", ""))

    def to_data(self) -> dict[str, Any]:
        """YAML-ready mapping."""
        d: dict[str, Any] = {}
        if self.labels:
            d["labels"] = dict(self.labels)
        d["addresses"] = [str(a) if a.num_addresses > 1 else str(a.network_address)
                          for a in self.addresses]
        if self.description:
            d["description"] = self.description
        return d

    def _key(self) -> tuple:
        return (self.name, sorted(self.labels.items()), self.addresses, self.description)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and self._key() == other._key()

    def __repr__(self) -> str:
        return f"Identity({self.name!r}, {self.labels}, {[str(a) for a in self.addresses]})"


class Rule:
    """Allow or deny traffic between two selectors' addresses on some ports."""

    __slots__ = ("name", "action", "src", "dst", "ports", "description")

    def __init__(self, name: str, action: str, src: Any = "any", dst: Any = "any",
                 ports: Iterable[Any] | None = None, description: str = "") -> None:
        """``src``/``dst`` (YAML ``from``/``to``): a selector or a list; ``ports``: entries."""
        self.name = check_name(name, "rule", "name")
        try:
            if action not in ACTIONS:
                raise _err(f"action {action!r} must be allow or deny", "action")
            self.action = action
            self.src = _selectors(src, "from")
            self.dst = _selectors(dst, "to")
            self.ports = self._ports(ports)
            if not isinstance(description, str):
                raise _err("description must be a string", "description")
            self.description = description
        except ConfigError as e:
            raise _under(e, what=f"rule '{name}': ") from None

    @staticmethod
    def _ports(ports: Any) -> tuple[PortSpec, ...]:
        if ports is None:
            return (PortSpec(None),)
        if isinstance(ports, (str, PortSpec, Mapping)):
            ports = [ports]
        if not isinstance(ports, (list, tuple)) or not ports:
            raise _err("ports must be a non-empty list of entries like {proto: tcp, port: 80} "
                       "(leave it out for all traffic)", "ports")
        out = []
        for i, p in enumerate(ports):
            try:
                out.append(PortSpec.parse(p))
            except ConfigError as e:
                raise _under(e, "ports", i, what=f"ports[{i}]: ") from None
        if any(p.proto is None for p in out):
            return (PortSpec(None),)
        return tuple(dict.fromkeys(out))

    @classmethod
    def from_data(cls, data: Any) -> Rule:
        """From a YAML mapping ``{name, action, from, to, ports, description}``."""
        if not isinstance(data, Mapping):
            raise _err("a rule must be a mapping with name, action, from and to")
        name = data.get("name")
        what = f"rule '{name}': " if isinstance(name, str) else ""
        for k in data:
            if k not in RULE_KEYS:
                raise _err(f"{what}unknown key '{k}' (allowed: {', '.join(RULE_KEYS)})", k)
        for k in ("name", "action", "from", "to"):
            if k not in data:
                raise _err(f"{what}missing key '{k}'", k)
        return cls(name, data["action"], data["from"], data["to"], data.get("ports"),
                   data.get("description", ""))

    @property
    def all_traffic(self) -> bool:
        """True when the rule covers every protocol and port."""
        return self.ports == (PortSpec(None),)

    def matches_ports(self, proto: int, dport: int, family: int) -> bool:
        """Whether a packet's protocol and destination port fall in one of the entries."""
        return any(p.applies_to(family) and p.matches(proto, dport) for p in self.ports)

    def to_data(self) -> dict[str, Any]:
        """YAML-ready mapping."""
        def side(sels: tuple[Selector, ...]) -> Any:
            return sels[0].to_data() if len(sels) == 1 else [s.to_data() for s in sels]
        d: dict[str, Any] = {"name": self.name, "action": self.action,
                             "from": side(self.src), "to": side(self.dst)}
        if not self.all_traffic:
            d["ports"] = [p.to_data() for p in self.ports]
        if self.description:
            d["description"] = self.description
        return d

    def ports_text(self) -> str:
        """The port entries as ``tcp/80,443 udp/53`` (``any`` for all traffic)."""
        return " ".join(str(p) for p in self.ports)

    def _key(self) -> tuple:
        return (self.name, self.action, self.src, self.dst, self.ports, self.description)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self._key() == other._key()

    def __repr__(self) -> str:
        return (f"Rule({self.name!r}, {self.action}, from={[str(s) for s in self.src]}, "
                f"to={[str(s) for s in self.dst]}, ports={self.ports_text()!r})")


# -- the policy ---------------------------------------------------------------------------------
class Policy:
    """Identities and named allow/deny rules over them; default deny.

    Treat a policy as immutable once built (address sets are cached): to change
    one, build a new one, e.g. ``Policy.from_data(edited(p.to_data()))``.
    """

    def __init__(self, identities: Iterable[Identity] | Mapping[str, Any] = (),
                 rules: Iterable[Rule | Mapping[str, Any]] = (), default: str = "deny",
                 name: str = "", description: str = "") -> None:
        """Create and validate; raises ConfigError naming the rule or identity and key."""
        if isinstance(identities, Mapping):
            ids = []
            for n, v in identities.items():
                try:
                    ids.append(v if isinstance(v, Identity) else Identity.from_data(n, v))
                except ConfigError as e:
                    raise _under(e, "identities", n) from None
            identities = ids
        self.identities: list[Identity] = list(identities)
        self.rules: list[Rule] = []
        for i, r in enumerate(rules):
            try:
                self.rules.append(r if isinstance(r, Rule) else Rule.from_data(r))
            except ConfigError as e:
                raise _under(e, "rules", i) from None
        self.default = default
        self.name = name
        self.description = description
        self.source: str | None = None
        self._cache: dict[Any, Any] = {}
        self.validate()

    def validate(self) -> None:
        """Check types, unique names and the default action."""
        if self.default not in ACTIONS:
            raise _err(f"default {self.default!r} must be deny or allow", "default")
        if not isinstance(self.name, str) or not isinstance(self.description, str):
            raise _err("name and description must be strings", "name")
        seen: set[str] = set()
        for ident in self.identities:
            if not isinstance(ident, Identity):
                raise _err(f"{ident!r} is not an Identity", "identities")
            if ident.name in seen:
                raise _err(f"identity '{ident.name}' is defined twice", "identities", ident.name)
            seen.add(ident.name)
        seen = set()
        for i, r in enumerate(self.rules):
            if r.name in seen:
                raise _err(f"rule '{r.name}': the name is used twice (rule names must be unique)",
                           "rules", i, "name")
            seen.add(r.name)

    # -- lookups -----------------------------------------------------------------------------
    def identity(self, name: str) -> Identity:
        """The identity called ``name``."""
        for ident in self.identities:
            if ident.name == name:
                return ident
        raise ConfigError(f"policy has no identity '{name}'", key=name)

    def rule(self, name: str) -> Rule:
        """The rule called ``name``."""
        for r in self.rules:
            if r.name == name:
                return r
        raise ConfigError(f"policy has no rule '{name}'", key=name)

    def select(self, selector: Any) -> list[Identity]:
        """The identities a label selector picks (none for a CIDR selector), in file order.

        Uses an index (label -> identity positions, built once like the address
        cache): scanning every identity per selector made compiling a 4k-identity,
        1.7k-rule mesh policy take 7 s, almost all of it in ``Selector.matches``.
        """
        sel = Selector.parse(selector)
        if sel.is_cidr:
            return []
        if not sel.labels:
            return list(self.identities)
        index = self._cache.get("label-index")
        if index is None:
            index = {}
            for pos, ident in enumerate(self.identities):
                for kv in ident.labels.items():
                    index.setdefault(kv, set()).add(pos)
            self._cache["label-index"] = index
        hits: set[int] | None = None
        for kv in sel.labels:
            got = index.get(tuple(kv), set())
            hits = set(got) if hits is None else hits & got
            if not hits:
                return []
        return [self.identities[p] for p in sorted(hits or ())]

    def addresses(self, selector: Any) -> tuple[list[IPNetwork], list[IPNetwork]]:
        """The IPv4 and IPv6 prefixes a selector covers, merged (cached)."""
        sel = Selector.parse(selector)
        key = ("sel", sel)
        if key not in self._cache:
            if sel.is_cidr:
                self._cache[key] = collapse(sel.networks())
            else:
                self._cache[key] = collapse(a for i in self.select(sel) for a in i.addresses)
        return self._cache[key]

    def side_addresses(self, rule: Rule, side: str) -> tuple[list[IPNetwork], list[IPNetwork]]:
        """The IPv4 and IPv6 prefixes of a rule's ``from`` (``"src"``) or ``to`` (``"dst"``)."""
        sels = rule.src if side == "src" else rule.dst
        if len(sels) == 1:
            return self.addresses(sels[0])
        key = (side, rule.name, sels)
        if key not in self._cache:
            nets: list[IPNetwork] = []
            for s in sels:
                v4, v6 = self.addresses(s)
                nets += v4 + v6
            self._cache[key] = collapse(nets)
        return self._cache[key]

    def ordered_rules(self) -> list[tuple[int, Rule]]:
        """``(index, rule)`` in evaluation order: deny rules first, then allow, each in order."""
        return ([(i, r) for i, r in enumerate(self.rules) if r.action == "deny"]
                + [(i, r) for i, r in enumerate(self.rules) if r.action == "allow"])

    def lint(self) -> list[str]:
        """Legal but suspicious things: selectors that pick nothing, shared addresses."""
        out = []
        for ident in self.identities:
            if not ident.addresses:
                out.append(f"identity '{ident.name}' has no addresses")
        for r in self.rules:
            for side, sels in (("from", r.src), ("to", r.dst)):
                for s in sels:
                    if not s.is_cidr and not self.select(s):
                        out.append(f"rule '{r.name}': {side} selector {s} matches no identity")
        owner: dict[IPNetwork, str] = {}
        for ident in self.identities:
            for a in ident.addresses:
                for b, other in owner.items():
                    if other != ident.name and a.version == b.version and a.overlaps(b):
                        out.append(f"identities '{other}' and '{ident.name}' share addresses "
                                   f"({b} and {a})")
                owner[a] = ident.name
        return out

    # -- YAML ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Load and validate a policy file; errors name the file, line, key and rule."""
        data = yamlsrc.load(path)
        pol = cls.from_data(data, str(path))
        pol.source = str(path)
        return pol

    @classmethod
    def loads(cls, text: str, name: str = "<string>") -> Policy:
        """Load a policy from YAML text; ``name`` is used in error messages."""
        return cls.from_data(yamlsrc.loads(text, name), name)

    @classmethod
    def from_data(cls, data: Any, file: str = "<data>") -> Policy:
        """Build from loaded YAML data (LocDict/LocList give line numbers)."""
        try:
            if not isinstance(data, Mapping):
                raise _err("a policy file must be a mapping with identities and rules")
            for k in data:
                if k not in TOP_KEYS:
                    raise _err(f"unknown key '{k}' (allowed: {', '.join(TOP_KEYS)})", k)
            idents = data.get("identities", {}) or {}
            if not isinstance(idents, Mapping):
                raise _err("identities must be a mapping of name -> {labels, addresses}",
                           "identities")
            rules = data.get("rules", []) or []
            if not isinstance(rules, list):
                raise _err("rules must be a list", "rules")
            return cls(idents, rules, data.get("default", "deny"), data.get("name", ""),
                       data.get("description", ""))
        except ConfigError as e:
            raise locate(e, file, data) from None

    def to_data(self) -> dict[str, Any]:
        """The policy as YAML-ready data (loads back to an equal policy)."""
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        d["identities"] = {i.name: i.to_data() for i in self.identities}
        d["rules"] = [r.to_data() for r in self.rules]
        d["default"] = self.default
        return d

    def to_yaml(self) -> str:
        """The policy as YAML text."""
        return yaml.safe_dump(self.to_data(), sort_keys=False)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Policy) and self.identities == other.identities
                and self.rules == other.rules and self.default == other.default
                and self.name == other.name and self.description == other.description)

    def __repr__(self) -> str:
        return (f"Policy({self.name!r}, {len(self.identities)} identities, "
                f"{len(self.rules)} rules, default {self.default})")


def locate(e: ConfigError, file: str, data: Any) -> ConfigError:
    """``e`` with ``file`` and the line its ``path`` leads to inside ``data``."""
    line = getattr(data, "line", None) or None
    node = data
    for step in e.path:
        if isinstance(node, yamlsrc.LocDict) and step in node:
            line, node = node.line_of(step), node[step]
        elif isinstance(node, yamlsrc.LocList) and isinstance(step, int) and step < len(node):
            line, node = node.line_of(step), node[step]
        else:
            break
    out = ConfigError(e.message, file=file, line=line, key=e.key, path=e.path)
    out.stage = e.stage
    return out


__all__ = ["Identity", "Policy", "PortSet", "PortSpec", "Rule", "Selector", "PROTOCOLS",
           "locate", "parse_proto", "proto_name"]
