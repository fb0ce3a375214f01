"""Compiled policy rules, and the path that takes them to a C policy stage (rte_acl).

The policy model (labels, address sets, services) compiles to a flat list of
:class:`AclRule`; this module checks each one, packs the list into the C
array ``struct pd_acl_rule[]`` (one numpy copy, no per-field cffi calls),
and commits it: the core compiles a complete new table aside and publishes
it with RCU, or refuses it (naming the rule id and the field) and keeps the
old one::

    from pydp.acl import AclRule, commit, counters
    rules = [AclRule(0, priority=100, src="10.0.9.0/24", action="deny"),
             AclRule(1, dst="10.0.2.0/24", proto=17, dport=(53, 53), action="allow")]
    seconds = commit(dp, "pol", rules, n_ids=2)
    pkts, nbytes = counters(dp, "pol", 2)

Semantics (see csrc/stages/policy.h): the highest ``priority`` wins, and on
a tie deny wins. A rule with neither ``src`` nor ``dst`` and no ``family``
applies to IPv4 and IPv6 (it becomes one C rule per family). Ports are
matched for TCP, UDP and SCTP packets that carry their header (unfragmented
or first fragments); any other packet has ports 0.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from ._core import check, ffi, lib
from .errors import ConfigError, InvalidArgument

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
PortRange = tuple[int, int]

ACTIONS = {"deny": 0, "allow": 1}
MAX_PRIORITY = lib.PD_POLICY_MAX_PRIORITY


@dataclass
class AclRule:
    """One compiled rule; its fields mirror ``struct pd_acl_rule``, in the same order.

    ``id``: the policy rule whose counters this one feeds (several AclRules
    may share an id). ``priority``: higher wins; on a tie deny wins.
    ``family``: 4 or 6; None = from the addresses, or both families when
    there are none. ``proto``: an IP protocol number, None = any.
    ``src``/``dst``: a network (or its text; host bits are cleared), None =
    any. ``sport``/``dport``: an inclusive ``(lo, hi)`` range or one port,
    None = any. ``action``: 'allow' or 'deny' (the default: fail closed).
    """

    id: int
    priority: int = 0
    family: int | None = None
    proto: int | None = None
    src: Network | str | None = None
    dst: Network | str | None = None
    sport: PortRange | int | None = None
    dport: PortRange | int | None = None
    action: str = "deny"

    def __post_init__(self) -> None:
        if not isinstance(self.id, int) or not 0 <= self.id < 2**32:
            raise InvalidArgument(f"acl rule {self.id!r}: id: must be an integer in 0..2^32-1")
        if self.action not in ACTIONS:
            raise self._err("action", f"{self.action!r} is neither 'allow' nor 'deny'")
        self.src = self._net("src", self.src)
        self.dst = self._net("dst", self.dst)
        if self.proto is not None and (not isinstance(self.proto, int)
                                       or not 0 <= self.proto <= 255):
            raise self._err("proto", f"{self.proto!r} is not a protocol number 0..255")
        self.sport = self._ports("sport", self.sport)
        self.dport = self._ports("dport", self.dport)
        if not isinstance(self.priority, int) or not 0 <= self.priority < 2**32:
            raise self._err("priority", f"{self.priority!r} is not an integer in 0..2^32-1")
        fams = {n.version for n in (self.src, self.dst) if n is not None}
        if len(fams) > 1:
            raise self._err("dst", f"{self.src} and {self.dst} are not of the same family")
        if self.family is not None:
            if self.family not in (4, 6):
                raise self._err("family", f"{self.family!r} is neither 4 nor 6")
            if fams and fams != {self.family}:
                raise self._err("family", f"IPv{self.family} rule with IPv{fams.pop()} "
                                "addresses")

    def _err(self, key: str, msg: str) -> InvalidArgument:
        return InvalidArgument(f"acl rule {self.id}: {key}: {msg}")

    def _net(self, key: str, v: Any) -> Network | None:
        if v is None or isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return v
        try:
            return ipaddress.ip_network(str(v), strict=False)
        except ValueError as e:
            raise self._err(key, str(e)) from None

    def _ports(self, key: str, v: Any) -> PortRange | None:
        if v is None:
            return None
        if isinstance(v, int):
            v = (v, v)
        try:
            lo, hi = v
        except (TypeError, ValueError):
            raise self._err(key, f"{v!r} is neither a port nor a (lo, hi) range") from None
        for p in (lo, hi):
            if not isinstance(p, int) or not 0 <= p <= 65535:
                raise self._err(key, f"{p!r} is not a port 0..65535")
        return (lo, hi)  # lo > hi is left to the core, which names the rule

    def families(self) -> tuple[int, ...]:
        """The address families this rule becomes C rules for."""
        if self.family is not None:
            return (self.family,)
        for n in (self.src, self.dst):
            if n is not None:
                return (n.version,)
        return (4, 6)


@dataclass
class CompiledPolicy:
    """What a policy compiles to: rules (AclRules or a :func:`rules_array`), ids, default."""

    rules: list[AclRule] | np.ndarray = field(default_factory=list)
    n_ids: int | None = None
    default_allow: bool = False

    def ids(self) -> int:
        """``n_ids``, or one past the highest rule id when it is not set."""
        if self.n_ids is not None:
            return self.n_ids
        if isinstance(self.rules, np.ndarray):
            return int(self.rules["id"].max()) + 1 if len(self.rules) else 0
        return max((r.id for r in self.rules), default=-1) + 1


# -- the C array -------------------------------------------------------------------------
_FIELDS = [("id", "=u4"), ("priority", "=u4"), ("family", "u1"), ("proto", "u1"),
           ("src_depth", "u1"), ("dst_depth", "u1"), ("src", ("u1", (16,))),
           ("dst", ("u1", (16,))), ("sport_lo", "=u2"), ("sport_hi", "=u2"),
           ("dport_lo", "=u2"), ("dport_hi", "=u2"), ("action", "u1")]
RULE_DTYPE = np.dtype({
    "names": [n for n, _ in _FIELDS],
    "formats": [f for _, f in _FIELDS],
    "offsets": [ffi.offsetof("struct pd_acl_rule", n) for n, _ in _FIELDS],
    "itemsize": ffi.sizeof("struct pd_acl_rule"),
})
_ZERO16 = bytes(16)


def rules_array(rules: Sequence[AclRule]) -> np.ndarray:
    """Pack rules into a ``struct pd_acl_rule[]`` image (one row per rule and family)."""
    cols: list[list[Any]] = [[] for _ in range(11)]
    (ids, prio, fam, proto, sd, dd, src, dst, sport, dport, act) = cols
    for r in rules:
        if not isinstance(r, AclRule):
            raise InvalidArgument(f"acl rules: {r!r} is not an AclRule")
        for f in r.families():
            ids.append(r.id)
            prio.append(r.priority)
            fam.append(f)
            proto.append(r.proto or 0)
            for net, depth, addr in ((r.src, sd, src), (r.dst, dd, dst)):
                if net is None:
                    depth.append(0)
                    addr.append(_ZERO16)
                else:
                    depth.append(net.prefixlen)
                    addr.append(net.network_address.packed.ljust(16, b"\0"))
            sport.append(r.sport or (0, 65535))
            dport.append(r.dport or (0, 65535))
            act.append(ACTIONS[r.action])
    arr = np.zeros(len(ids), dtype=RULE_DTYPE)
    if not ids:
        return arr
    for name, col in (("id", ids), ("priority", prio), ("family", fam), ("proto", proto),
                      ("src_depth", sd), ("dst_depth", dd), ("action", act)):
        arr[name] = col
    arr["src"] = np.frombuffer(b"".join(src), dtype=np.uint8).reshape(-1, 16)
    arr["dst"] = np.frombuffer(b"".join(dst), dtype=np.uint8).reshape(-1, 16)
    sp = np.array(sport, dtype=np.uint16).reshape(-1, 2)
    dp = np.array(dport, dtype=np.uint16).reshape(-1, 2)
    arr["sport_lo"], arr["sport_hi"] = sp[:, 0], sp[:, 1]
    arr["dport_lo"], arr["dport_hi"] = dp[:, 0], dp[:, 1]
    return arr


def _target(target: Any, stage: int | str) -> tuple[Any, int]:
    """(C pipeline, stage index) from a Dataplane (stage by name or index) or a cdata pipeline."""
    cp = getattr(target, "_cp", target)
    if cp is None or cp == ffi.NULL:
        raise InvalidArgument("policy: the dataplane is closed")
    if isinstance(stage, str):
        index = getattr(target, "stage_index", None)
        if index is None or stage not in index:
            raise InvalidArgument(f"policy: no stage named '{stage}'")
        return cp, index[stage]
    return cp, int(stage)


def commit(target: Any, stage: int | str, rules: Sequence[AclRule] | np.ndarray,
           n_ids: int | None = None, default_allow: bool = False) -> float:
    """Compile ``rules`` into a new table of policy stage ``stage`` and publish it.

    ``target``: a :class:`pydp.Dataplane` (``stage`` a name or index) or a C
    pipeline pointer (``stage`` an index). ``rules``: AclRules, or an array
    from :func:`rules_array`. ``n_ids`` defaults to one past the highest id.
    Returns the seconds the core took to validate, compile and publish (RCU
    grace period included). On error raises :class:`InvalidArgument` naming
    the rule id and field; the old policy stays in force.
    """
    cp, idx = _target(target, stage)
    arr = rules if isinstance(rules, np.ndarray) else rules_array(rules)
    if arr.dtype != RULE_DTYPE:
        raise InvalidArgument("policy: rules array is not a rules_array() result")
    if n_ids is None:
        n_ids = int(arr["id"].max()) + 1 if len(arr) else 0
    arr = np.ascontiguousarray(arr)
    ptr = ffi.from_buffer("struct pd_acl_rule[]", arr) if len(arr) else ffi.NULL
    check(lib.pd_policy_commit(cp, idx, ptr, len(arr), int(n_ids), int(bool(default_allow))))
    inf = info(cp, idx)
    return (inf["build_ns"] + inf["publish_ns"]) / 1e9


def counters(target: Any, stage: int | str, n_ids: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rule-id (packets, bytes) of the current table, summed over workers."""
    cp, idx = _target(target, stage)
    pkts = np.zeros(n_ids, dtype=np.uint64)
    nbytes = np.zeros(n_ids, dtype=np.uint64)
    check(lib.pd_policy_counters(cp, idx, ffi.from_buffer("uint64_t[]", pkts),
                                 ffi.from_buffer("uint64_t[]", nbytes), n_ids))
    return pkts, nbytes


def info(target: Any, stage: int | str) -> dict[str, int]:
    """The current table: generation, rules per family, ids, default, last commit timings."""
    cp, idx = _target(target, stage)
    out = ffi.new("struct pd_policy_info *")
    check(lib.pd_policy_info(cp, idx, out))
    return {k: int(getattr(out, k)) for k in (
        "generation", "build_ns", "publish_ns", "n_rules4", "n_rules6", "n_ids",
        "default_allow", "conntrack_stage", "n_acl", "n_classes", "revalidate_ns",
        "flows_revalidated", "flows_revoked", "acl_built", "acl_reused")}


# -- policy files ------------------------------------------------------------------------
PolicyLoader = Callable[[str], CompiledPolicy]
_loader: PolicyLoader | None = None


def set_policy_loader(fn: PolicyLoader | None) -> None:
    """Install the compiler a policy stage's ``policy: FILE`` goes through.

    The policy model (``pydp.policy``) registers itself here on import:
    ``fn(path) -> CompiledPolicy``.
    """
    global _loader
    _loader = fn


def load_policy(path: str) -> CompiledPolicy:
    """Compile the policy file ``path`` with the installed loader."""
    if _loader is None:
        try:
            import pydp.policy  # noqa: F401 - registers its loader on import
        except ImportError:
            pass
    if _loader is None:
        raise ConfigError(f"policy: {path}: no policy compiler is installed (pydp.policy "
                          "registers one with pydp.acl.set_policy_loader)", key="policy")
    return _loader(path)
