"""What changes between two policies: rules, identities and who can reach whom.

:func:`reach` says, for every pair of endpoints, which protocols and ports the
first may send to the second under the evaluator's semantics (deny wins,
default deny). Endpoints are the identities, plus one ``cidr:...`` endpoint per
CIDR selector used in a rule: its addresses minus those of identities and of
smaller CIDR selectors (so each address belongs to one external endpoint).

Reach is exact at the address level: every endpoint's addresses are split into
*atoms*, prefixes that lie wholly inside or wholly outside every identity
address, CIDR and ``except`` of the policies. Each atom pair gets its own port
set. When the atom pairs of one endpoint pair disagree (a rule covers only some
of an identity's addresses), the pair's reach is their union and is marked
``partial``.

:func:`diff` compares two policies: rules added, removed or changed (by name,
with the fields that changed), identities likewise, the default, and the reach
each endpoint pair gains or loses.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import Identity, IPNetwork, Policy, PortSet, Rule, Selector, subtract

_ALL = PortSet.all()


class _Cover:
    """Fast ``prefix inside a set of disjoint prefixes`` test (bisect on start addresses)."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        by = sorted(nets, key=lambda n: int(n.network_address))
        self.starts = [int(n.network_address) for n in by]
        self.ends = [int(n.broadcast_address) for n in by]

    def contains(self, atom: IPNetwork) -> bool:
        lo = int(atom.network_address)
        i = bisect.bisect_right(self.starts, lo) - 1
        return i >= 0 and self.ends[i] >= int(atom.broadcast_address)


def _bounds(policy: Policy) -> list[IPNetwork]:
    """Every prefix that can split an endpoint: identity addresses, cidrs, excepts."""
    out: list[IPNetwork] = [a for i in policy.identities for a in i.addresses]
    for r in policy.rules:
        for s in r.src + r.dst:
            out.extend(s.cidrs)
            out.extend(s.excepts)
    return out


def _refine(net: IPNetwork, bounds: list[IPNetwork]) -> list[IPNetwork]:
    """``net`` split so each piece is inside or outside every prefix of ``bounds``."""
    pieces = [net]
    for b in bounds:
        if b.version != net.version or b == net or not b.subnet_of(net):  # type: ignore[arg-type]
            continue
        nxt: list[IPNetwork] = []
        for p in pieces:
            if p != b and b.subnet_of(p):  # type: ignore[arg-type]
                nxt.extend(p.address_exclude(b))  # type: ignore[arg-type]
                nxt.append(b)
            else:
                nxt.append(p)
        pieces = nxt
    return sorted(set(pieces), key=lambda n: (n.version, int(n.network_address)))


class Analysis:
    """A policy's endpoints split into atoms, and each rule's atoms on both sides."""

    def __init__(self, policy: Policy, extra_bounds: Iterable[IPNetwork] = ()) -> None:
        """Analyse ``policy``; ``extra_bounds`` also split atoms (to align two policies)."""
        self.policy = policy
        bounds = sorted(set(_bounds(policy)) | set(extra_bounds),
                        key=lambda n: (n.version, n.prefixlen, int(n.network_address)))
        self.endpoints: dict[str, list[IPNetwork]] = {}
        self.kind: dict[str, str] = {}
        for ident in policy.identities:
            self.endpoints[ident.name] = list(dict.fromkeys(
                a for n in ident.addresses for a in _refine(n, bounds)))
            self.kind[ident.name] = "identity"
        # each external address goes to the smallest CIDR selector holding it
        owned = [a for i in policy.identities for a in i.addresses]
        by_size = sorted(self.cidr_selectors(policy),
                         key=lambda s: sum(n.num_addresses for n in s.networks()))
        for sel in by_size:
            name = str(sel)
            if name in self.endpoints:
                continue
            ext = subtract(sel.networks(), owned)
            owned += ext
            self.endpoints[name] = list(dict.fromkeys(a for n in ext for a in _refine(n, bounds)))
            self.kind[name] = "external"
        self.endpoints = {k: v for k, v in self.endpoints.items()
                          if v or self.kind[k] == "identity"}
        atoms = sorted({a for v in self.endpoints.values() for a in v},
                       key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        self.atoms = atoms
        self.atom_id = {a: i for i, a in enumerate(atoms)}
        self.sides: list[tuple[list[int], list[int]]] = []
        for r in policy.rules:
            self.sides.append((self._members(policy.side_addresses(r, "src")),
                               self._members(policy.side_addresses(r, "dst"))))
        self._ports: dict[tuple, PortSet] = {}

    @staticmethod
    def cidr_selectors(policy: Policy) -> list[Selector]:
        """The distinct CIDR selectors used by the rules, in order of appearance."""
        return list(dict.fromkeys(s for r in policy.rules for s in r.src + r.dst if s.is_cidr))

    def _members(self, fams: tuple[list[IPNetwork], list[IPNetwork]]) -> list[int]:
        covers = (_Cover(fams[0]), _Cover(fams[1]))
        return [i for i, a in enumerate(self.atoms) if covers[a.version == 6].contains(a)]

    def _rule_ports(self, idx: int, fam: int) -> PortSet:
        key = (idx, fam)
        if key not in self._ports:
            self._ports[key] = PortSet.of(self.policy.rules[idx].ports, fam)
        return self._ports[key]

    def atom_verdicts(self) -> tuple[dict[tuple[int, int], PortSet],
                                    dict[tuple[int, int], tuple[PortSet, list[str]]]]:
        """Per atom pair: the allowed port set, and the denied set with the deny rules' names.

        Only pairs with something allowed (or denied) appear.
        """
        allow: dict[tuple[int, int], list[int]] = {}
        deny: dict[tuple[int, int], list[int]] = {}
        atoms = self.atoms
        for idx, (r, (srcs, dsts)) in enumerate(zip(self.policy.rules, self.sides)):
            acc = allow if r.action == "allow" else deny
            for a in srcs:
                va = atoms[a].version
                for b in dsts:
                    if atoms[b].version == va:
                        acc.setdefault((a, b), []).append(idx)
        memo: dict[tuple, PortSet] = {}

        def union(ids: tuple[int, ...], fam: int) -> PortSet:
            key = (ids, fam)
            if key not in memo:
                ps = PortSet()
                for i in ids:
                    ps = ps | self._rule_ports(i, fam)
                memo[key] = ps
            return memo[key]

        denied = {k: (union(tuple(v), atoms[k[0]].version),
                      [self.policy.rules[i].name for i in v]) for k, v in deny.items()}
        allowed: dict[tuple[int, int], PortSet] = {}
        if self.policy.default == "allow":
            ids = range(len(atoms))
            pairs: Iterable[tuple[int, int]] = ((a, b) for a in ids for b in ids
                                                if atoms[a].version == atoms[b].version)
        else:
            pairs = allow.keys()
        for k in pairs:
            fam = atoms[k[0]].version
            base = union(tuple(allow[k]), fam) if self.policy.default == "deny" else _ALL
            ps = base - denied[k][0] if k in denied else base
            if ps:
                allowed[k] = ps
        return allowed, denied

    def pair_atoms(self, src: str, dst: str) -> list[tuple[int, int]]:
        """The same-family atom pairs between two endpoints."""
        aid = self.atom_id
        return [(aid[a], aid[b]) for a in self.endpoints[src] for b in self.endpoints[dst]
                if a.version == b.version]


@dataclass
class Reach:
    """What ``src`` may send to ``dst`` (``partial``: only some of their addresses)."""

    src: str
    dst: str
    ports: PortSet
    partial: bool = False
    # when partial: (source prefix, destination prefix, ports) for each address pair concerned
    detail: list[tuple[str, str, PortSet]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {"from": self.src, "to": self.dst, "ports": str(self.ports),
                             "partial": self.partial}
        if self.partial:
            d["detail"] = [{"from": a, "to": b, "ports": str(p)} for a, b, p in self.detail]
        return d

    def format(self, max_detail: int = 8) -> str:
        """One line, plus up to ``max_detail`` address-pair lines when partial."""
        lines = [str(self)]
        for a, b, p in self.detail[:max_detail]:
            lines.append(f"    {a} -> {b}: {p}")
        if len(self.detail) > max_detail:
            lines.append(f"    ... {len(self.detail) - max_detail} more address pairs")
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}: {self.ports}" + (" (some addresses)" if self.partial
                                                           else "")


def _endpoint_map(an: Analysis, per_atom: dict[tuple[int, int], Any],
                  ) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Endpoint pairs that have at least one atom pair in ``per_atom``."""
    owners: dict[int, list[str]] = {}
    for name, atoms in an.endpoints.items():
        for a in atoms:
            owners.setdefault(an.atom_id[a], []).append(name)
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for (a, b) in per_atom:
        for e in owners.get(a, ()):
            for f in owners.get(b, ()):
                out.setdefault((e, f), []).append((a, b))
    return out


def reach(policy: Policy, analysis: Analysis | None = None) -> list[Reach]:
    """Every endpoint pair with something allowed, and what (sorted by names)."""
    an = analysis or Analysis(policy)
    allowed, _ = an.atom_verdicts()
    out = []
    for (e, f), aps in _endpoint_map(an, allowed).items():
        ps = PortSet()
        for ap in aps:
            ps = ps | allowed[ap]
        full = an.pair_atoms(e, f)
        partial = len(aps) < len(full) or any(allowed[ap] != ps for ap in aps)
        detail = ([(str(an.atoms[a]), str(an.atoms[b]), allowed[(a, b)]) for a, b in aps]
                  if partial else [])
        out.append(Reach(e, f, ps, partial, detail))
    return sorted(out, key=lambda r: (r.src, r.dst))


def denials(policy: Policy, analysis: Analysis | None = None,
            ) -> list[tuple[str, str, PortSet, list[str]]]:
    """Endpoint pairs some deny rule covers: ``(src, dst, denied ports, rule names)``."""
    an = analysis or Analysis(policy)
    _, denied = an.atom_verdicts()
    out = []
    for (e, f), aps in _endpoint_map(an, denied).items():
        ps = PortSet()
        names: list[str] = []
        for ap in aps:
            ps = ps | denied[ap][0]
            names += [n for n in denied[ap][1] if n not in names]
        out.append((e, f, ps, names))
    return sorted(out, key=lambda t: (t[0], t[1]))


# -- diff ----------------------------------------------------------------------------------------
@dataclass
class Change:
    """A rule or identity present in both policies whose fields differ."""

    name: str
    changes: dict[str, tuple[str, str]]  # field -> (old, new), as text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name,
                "changes": {k: {"old": o, "new": n} for k, (o, n) in self.changes.items()}}


@dataclass
class PolicyDiff:
    """The differences between two policies (see :func:`diff`)."""

    rules_added: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)
    rules_changed: list[Change] = field(default_factory=list)
    identities_added: list[str] = field(default_factory=list)
    identities_removed: list[str] = field(default_factory=list)
    identities_changed: list[Change] = field(default_factory=list)
    default: tuple[str, str] | None = None
    reach_gained: list[Reach] = field(default_factory=list)
    reach_lost: list[Reach] = field(default_factory=list)
    _rule_text: dict[str, str] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.rules_added or self.rules_removed or self.rules_changed
                    or self.identities_added or self.identities_removed
                    or self.identities_changed or self.default or self.reach_gained
                    or self.reach_lost)

    def gained(self, src: str, dst: str) -> Reach | None:
        """The reach ``src -> dst`` gains, if any."""
        return next((r for r in self.reach_gained if (r.src, r.dst) == (src, dst)), None)

    def lost(self, src: str, dst: str) -> Reach | None:
        """The reach ``src -> dst`` loses, if any."""
        return next((r for r in self.reach_lost if (r.src, r.dst) == (src, dst)), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "default": ({"old": self.default[0], "new": self.default[1]} if self.default
                        else None),
            "rules": {"added": list(self.rules_added), "removed": list(self.rules_removed),
                      "changed": [c.to_dict() for c in self.rules_changed]},
            "identities": {"added": list(self.identities_added),
                           "removed": list(self.identities_removed),
                           "changed": [c.to_dict() for c in self.identities_changed]},
            "reach": {"gained": [r.to_dict() for r in self.reach_gained],
                      "lost": [r.to_dict() for r in self.reach_lost]},
        }

    def format(self) -> str:
        """Human-readable text, one change a line."""
        if not self:
            return "no differences"
        counts = []
        for what, n in (("rule(s) added", len(self.rules_added)),
                        ("rule(s) removed", len(self.rules_removed)),
                        ("rule(s) changed", len(self.rules_changed)),
                        ("identity(ies) added", len(self.identities_added)),
                        ("identity(ies) removed", len(self.identities_removed)),
                        ("identity(ies) changed", len(self.identities_changed)),
                        ("pair(s) gain reach", len(self.reach_gained)),
                        ("pair(s) lose reach", len(self.reach_lost))):
            if n:
                counts.append(f"{n} {what}")
        lines = ["policy diff: " + ", ".join(counts)]
        if self.default:
            lines.append(f"default: {self.default[0]} -> {self.default[1]}")
        if self.rules_added or self.rules_removed or self.rules_changed:
            lines.append("rules:")
            lines += [f"  + {n}: {self._rule_text.get('+' + n, '')}" for n in self.rules_added]
            lines += [f"  - {n}: {self._rule_text.get('-' + n, '')}" for n in self.rules_removed]
            for c in self.rules_changed:
                lines.append(f"  ~ {c.name}: " + "; ".join(f"{k} {o} -> {n}"
                                                          for k, (o, n) in c.changes.items()))
        if self.identities_added or self.identities_removed or self.identities_changed:
            lines.append("identities:")
            lines += [f"  + {n}" for n in self.identities_added]
            lines += [f"  - {n}" for n in self.identities_removed]
            for c in self.identities_changed:
                lines.append(f"  ~ {c.name}: " + "; ".join(f"{k} {o} -> {n}"
                                                          for k, (o, n) in c.changes.items()))
        if self.reach_gained:
            lines.append("reach gained:")
            lines += [f"  + {r.format()}" for r in self.reach_gained]
        if self.reach_lost:
            lines.append("reach lost:")
            lines += [f"  - {r.format()}" for r in self.reach_lost]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _sel_text(sels: tuple[Selector, ...]) -> str:
    return " | ".join(str(s) for s in sels)


def _rule_fields(r: Rule) -> dict[str, str]:
    return {"action": r.action, "from": _sel_text(r.src), "to": _sel_text(r.dst),
            "ports": r.ports_text(), "description": r.description}


def _rule_summary(r: Rule) -> str:
    f = _rule_fields(r)
    return f"{f['action']} {f['from']} -> {f['to']} {f['ports']}"


def _identity_fields(i: Identity) -> dict[str, str]:
    return {"labels": ",".join(f"{k}={v}" for k, v in sorted(i.labels.items())) or "(none)",
            "addresses": ",".join(str(a) for a in i.addresses) or "(none)",
            "description": i.description}


def _changes(old: dict[str, str], new: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {k: (old[k], new[k]) for k in old if old[k] != new[k]}


def _reach_delta(a_an: Analysis, a_allowed: dict, b_an: Analysis, b_allowed: dict,
                 ) -> list[Reach]:
    """Reach present in ``b`` but not in ``a`` (compared per endpoint and atom)."""
    def keyed(an: Analysis, allowed: dict) -> dict[tuple, PortSet]:
        out = {}
        for (e, f), aps in _endpoint_map(an, allowed).items():
            for a, b in aps:
                out[(e, f, an.atoms[a], an.atoms[b])] = allowed[(a, b)]
        return out
    old = keyed(a_an, a_allowed)
    new = keyed(b_an, b_allowed)
    per_pair: dict[tuple[str, str], list[tuple[Any, Any, PortSet]]] = {}
    for k, ps in new.items():
        extra = ps - old[k] if k in old else ps
        per_pair.setdefault((k[0], k[1]), []).append((k[2], k[3], extra))
    out = []
    for (e, f), extras in per_pair.items():
        total = PortSet()
        for x in extras:
            total = total | x[2]
        if not total:
            continue
        n_atoms = len(b_an.pair_atoms(e, f))
        partial = len(extras) < n_atoms or any(x[2] != total for x in extras)
        detail = [(str(a), str(b), x) for a, b, x in extras if x] if partial else []
        out.append(Reach(e, f, total, partial, detail))
    return sorted(out, key=lambda r: (r.src, r.dst))


def diff(old: Policy, new: Policy) -> PolicyDiff:
    """Rules and identities added/removed/changed, and reach gained or lost per endpoint pair."""
    d = PolicyDiff()
    o_rules = {r.name: r for r in old.rules}
    n_rules = {r.name: r for r in new.rules}
    d.rules_added = [n for n in n_rules if n not in o_rules]
    d.rules_removed = [n for n in o_rules if n not in n_rules]
    for n in d.rules_added:
        d._rule_text["+" + n] = _rule_summary(n_rules[n])
    for n in d.rules_removed:
        d._rule_text["-" + n] = _rule_summary(o_rules[n])
    for n, r in n_rules.items():
        if n in o_rules:
            ch = _changes(_rule_fields(o_rules[n]), _rule_fields(r))
            if ch:
                d.rules_changed.append(Change(n, ch))
    o_ids = {i.name: i for i in old.identities}
    n_ids = {i.name: i for i in new.identities}
    d.identities_added = [n for n in n_ids if n not in o_ids]
    d.identities_removed = [n for n in o_ids if n not in n_ids]
    for n, i in n_ids.items():
        if n in o_ids:
            ch = _changes(_identity_fields(o_ids[n]), _identity_fields(i))
            if ch:
                d.identities_changed.append(Change(n, ch))
    if old.default != new.default:
        d.default = (old.default, new.default)
    bounds = set(_bounds(old)) | set(_bounds(new))
    a_old = Analysis(old, bounds)
    a_new = Analysis(new, bounds)
    old_allowed, _ = a_old.atom_verdicts()
    new_allowed, _ = a_new.atom_verdicts()
    d.reach_gained = _reach_delta(a_old, old_allowed, a_new, new_allowed)
    d.reach_lost = _reach_delta(a_new, new_allowed, a_old, old_allowed)
    return d


__all__ = ["Analysis", "Change", "PolicyDiff", "Reach", "denials", "diff", "reach"]
