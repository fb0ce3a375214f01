"""Import Kubernetes NetworkPolicy objects (networking.k8s.io/v1) as a :class:`Policy`.

``import_k8s(docs, inventory)`` returns ``(policy, warnings)``. ``docs`` is a
list of NetworkPolicy mappings, or one or more paths to YAML files (multi-doc;
``kind: List`` is unpacked). The *inventory* says which pods exist, in which
namespace, with which labels and IPs, since a policy alone names no addresses::

    namespaces:                       # optional; namespaces of pods are implied
      - name: myproject
        labels: {project: myproject}  # kubernetes.io/metadata.name is always added
    pods:
      - name: db                      # required
        namespace: default            # default: default
        labels: {role: db}
        ips: [10.244.0.10, "fd00:244::10"]

Each pod becomes an identity named ``namespace/pod`` whose labels are the pod's
labels plus ``k8s:namespace``, ``k8s:pod`` (``namespace/pod``) and its
namespace's labels as ``k8s:ns:<name>`` (Kubernetes label names cannot hold a
colon, so these never clash).

Semantics are Kubernetes': a pod selected by any policy whose ``policyTypes``
has Ingress (Egress) is isolated for ingress (egress), and then only the union
of those policies' rules lets traffic in (out). A connection from ``s`` to
``d`` is allowed when ``s``'s egress side allows it and ``d``'s ingress side
allows it; addresses that are not pods are never isolated. That conjunction is
written as four kinds of allow rules (all under default deny):

- ``k8s:non-isolated``: from every address except egress-isolated pods to every
  address except ingress-isolated pods, all traffic;
- ``<ns>/<policy>:ingress[i]``: the rule's peers, minus egress-isolated pods, to
  the selected pods, on the rule's ports;
- ``<ns>/<policy>:egress[i]``: the selected pods to the rule's peers, minus
  ingress-isolated pods, on the rule's ports;
- ``<egress rule>+<ingress rule>``: pods both rules cover, on the ports both allow.

``ipBlock`` matches addresses (pod IPs inside the block too), minus ``except``.

Supported: ``podSelector`` and ``namespaceSelector`` (``matchLabels`` and
``matchExpressions`` with In, NotIn, Exists, DoesNotExist), both combined in one
peer, ``ipBlock`` with ``except``, ``policyTypes``, ingress and egress, ports
with protocol TCP or UDP, ``port`` and ``endPort``. Everything else is named in
the warnings, and fails closed: an unsupported port entry (SCTP, a named port),
peer or rule field is dropped, so the rule allows less, never more; a rule left
with no peer or port allows nothing. A policy whose own ``podSelector`` cannot
be evaluated is skipped as a whole (its pods are then not isolated by it), and
says so. Object metadata other than name and namespace carries no policy
meaning and is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from .. import yamlsrc
from ..errors import ConfigError
from .model import (
    Identity,
    IPNetwork,
    Policy,
    PortSet,
    PortSpec,
    Rule,
    Selector,
    locate,
    parse_network,
)

API_VERSION = "networking.k8s.io/v1"
NS_NAME_LABEL = "kubernetes.io/metadata.name"
INVENTORY_KEYS = ("namespaces", "pods")
NAMESPACE_KEYS = ("name", "labels")
POD_KEYS = ("name", "namespace", "labels", "ips")
META_IGNORED = ("labels", "annotations", "uid", "resourceVersion", "generation",
                "creationTimestamp", "managedFields", "selfLink", "finalizers", "ownerReferences",
                "generateName", "deletionTimestamp", "deletionGracePeriodSeconds")
_WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

Docs = Union[str, Path, Mapping[str, Any], Iterable[Union[str, Path, Mapping[str, Any]]]]


# -- inventory -----------------------------------------------------------------------------------
@dataclass
class Pod:
    """One pod of the inventory."""

    namespace: str
    name: str
    labels: dict[str, str]
    ips: list[IPNetwork]

    @property
    def key(self) -> str:
        """``namespace/name``: the pod's identity name."""
        return f"{self.namespace}/{self.name}"


@dataclass
class Inventory:
    """Pods and namespaces (with their labels) that the policies are evaluated against."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)

    @classmethod
    def load(cls, src: Mapping[str, Any] | str | Path) -> Inventory:
        """From a mapping or a YAML file (format in the module docstring)."""
        if isinstance(src, (str, Path)):
            return cls.from_data(yamlsrc.load(src), str(src))
        return cls.from_data(src, "<inventory>")

    @classmethod
    def from_data(cls, data: Any, file: str = "<inventory>") -> Inventory:
        """Validate loaded data; errors name the file, line and key."""
        try:
            return cls._build(data)
        except ConfigError as e:
            raise locate(e, file, data) from None

    @classmethod
    def _build(cls, data: Any) -> Inventory:
        def err(msg: str, *path: Any) -> ConfigError:
            key = next((p for p in reversed(path) if isinstance(p, str)), None)
            return ConfigError("inventory: " + msg, key=key, path=path)

        def keys(d: Any, allowed: tuple[str, ...], *path: Any) -> None:
            if not isinstance(d, Mapping):
                raise err(f"expected a mapping with {', '.join(allowed)}", *path)
            for k in d:
                if k not in allowed:
                    raise err(f"unknown key '{k}' (allowed: {', '.join(allowed)})", *path, k)

        def labels(v: Any, *path: Any) -> dict[str, str]:
            if v is None:
                return {}
            if not isinstance(v, Mapping):
                raise err("labels must be a mapping", *path)
            out = {}
            for k, x in v.items():
                if not isinstance(x, (str, int)) or isinstance(x, bool):
                    raise err(f"label {k!r}: value {x!r} must be a string", *path, k)
                out[str(k)] = str(x)
            return out

        keys(data, INVENTORY_KEYS)
        inv = cls()
        for i, nd in enumerate(data.get("namespaces") or []):
            keys(nd, NAMESPACE_KEYS, "namespaces", i)
            name = nd.get("name")
            if not isinstance(name, str) or not name:
                raise err("a namespace needs a name", "namespaces", i, "name")
            if name in inv.namespaces:
                raise err(f"namespace '{name}' is listed twice", "namespaces", i, "name")
            inv.namespaces[name] = {**labels(nd.get("labels"), "namespaces", i, "labels"),
                                    NS_NAME_LABEL: name}
        for i, pd in enumerate(data.get("pods") or []):
            keys(pd, POD_KEYS, "pods", i)
            name, ns = pd.get("name"), pd.get("namespace", "default")
            if not isinstance(name, str) or not name:
                raise err("a pod needs a name", "pods", i, "name")
            if not isinstance(ns, str) or not ns:
                raise err(f"pod '{name}': namespace must be a name", "pods", i, "namespace")
            ips = pd.get("ips") or []
            if not isinstance(ips, list):
                raise err(f"pod '{name}': ips must be a list", "pods", i, "ips")
            nets = []
            for j, ip in enumerate(ips):
                try:
                    net = parse_network(ip)
                except ConfigError as e:
                    raise err(f"pod '{name}': {e.message}", "pods", i, "ips", j) from None
                if net.num_addresses != 1:
                    raise err(f"pod '{name}': {ip} is not a single address", "pods", i, "ips", j)
                nets.append(net)
            pod = Pod(ns, name, labels(pd.get("labels"), "pods", i, "labels"), nets)
            if pod.key in inv.pods:
                raise err(f"pod '{pod.key}' is listed twice", "pods", i, "name")
            inv.pods[pod.key] = pod
            inv.namespaces.setdefault(ns, {NS_NAME_LABEL: ns})
        return inv

    def identity(self, pod: Pod) -> Identity:
        """The pod as a policy identity (``k8s:`` labels added)."""
        labels = dict(pod.labels)
        labels["k8s:namespace"] = pod.namespace
        labels["k8s:pod"] = pod.key
        for k, v in self.namespaces.get(pod.namespace, {}).items():
            labels[f"k8s:ns:{k}"] = v
        return Identity(pod.key, labels, pod.ips)


# -- label selectors -----------------------------------------------------------------------------
class _Skip(Exception):
    """Something unsupported: the enclosing peer, port, rule or policy is dropped."""

    def __init__(self, msg: str, line: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.line = line


def _line(node: Any, key: Any = None) -> int | None:
    """The line of ``key`` in ``node`` (or of ``node``) when it was loaded from YAML."""
    if isinstance(node, yamlsrc.LocDict):
        return (node.line_of(key) if key is not None else node.line) or None
    if isinstance(node, yamlsrc.LocList):
        return (node.line_of(key) if isinstance(key, int) else node.line) or None
    return None


@dataclass
class _LabelSel:
    match: Callable[[Mapping[str, str]], bool]
    hint: dict[str, str] | None  # the same selection as equality labels, when it is one


# -- address sets ------------------------------------------------------------------------------
@dataclass
class _Set:
    """Addresses: whole pods, CIDR blocks (with excepts) and single pod IPs."""

    pods: frozenset[str] = frozenset()
    hints: tuple[tuple[tuple[str, str], ...], ...] = ()
    blocks: tuple[tuple[IPNetwork, tuple[IPNetwork, ...]], ...] = ()
    ips: frozenset[IPNetwork] = frozenset()

    def __or__(self, o: _Set) -> _Set:
        return _Set(self.pods | o.pods, self.hints + o.hints, self.blocks + o.blocks,
                    self.ips | o.ips)

    def empty(self) -> bool:
        return not self.pods and not self.blocks and not self.ips

    def minus_pods(self, drop: frozenset[str], inv: Inventory) -> _Set:
        """Without the addresses of the pods in ``drop``."""
        gone = [ip for k in drop for ip in inv.pods[k].ips]
        blocks = []
        for cidr, exc in self.blocks:
            holes = [ip for ip in gone if ip.version == cidr.version and ip.subnet_of(cidr)
                     and not any(ip.subnet_of(x) for x in exc if x.version == ip.version)]
            blocks.append((cidr, exc + tuple(sorted(set(holes)))))
        return _Set(self.pods - drop, self.hints, tuple(blocks), self.ips - set(gone))

    def restrict(self, keep: frozenset[str], inv: Inventory) -> _Set:
        """Only the addresses of the pods in ``keep``."""
        ips = set()
        for k in keep - self.pods:
            for ip in inv.pods[k].ips:
                if ip in self.ips or any(_in_block(ip, b) for b in self.blocks):
                    ips.add(ip)
        return _Set(self.pods & keep, self.hints, (), frozenset(ips))


def _in_block(ip: IPNetwork, block: tuple[IPNetwork, tuple[IPNetwork, ...]]) -> bool:
    cidr, exc = block
    return (ip.version == cidr.version and ip.subnet_of(cidr)  # type: ignore[arg-type]
            and not any(x.version == ip.version and ip.subnet_of(x) for x in exc))


_ALL_SET = _Set(blocks=tuple((n, ()) for n in _WORLD))


@dataclass
class _KRule:
    """One ingress or egress rule of one NetworkPolicy, resolved against the inventory."""

    name: str  # ns/policy:ingress[i]
    selected: frozenset[str]
    sel_hint: dict[str, str] | None
    peers: _Set | None  # None: every address
    ports: PortSet | None  # None: all traffic


@dataclass
class _KPolicy:
    name: str
    selected: frozenset[str]
    sel_hint: dict[str, str] | None
    types: set[str]
    ingress: list[_KRule]
    egress: list[_KRule]


# -- parsing NetworkPolicy objects ---------------------------------------------------------------
class _Importer:
    """Turns NetworkPolicy documents into :class:`_KPolicy` and then into a Policy."""

    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.warnings: list[str] = []
        self.file: str | None = None
        self.prefix = ""

    # -- reporting -------------------------------------------------------------------------------
    def warn(self, msg: str, line: int | None = None) -> None:
        where = f"{self.file}:{line}: " if self.file and line else (
            f"{self.file}: " if self.file else "")
        self.warnings.append(f"{where}{self.prefix}{msg}")

    def skipped(self, s: _Skip, what: str) -> None:
        self.warn(f"{s.msg}; {what}", s.line)

    def bad(self, msg: str, node: Any = None, key: Any = None) -> ConfigError:
        return ConfigError(self.prefix + msg, file=self.file, line=_line(node, key),
                           key=key if isinstance(key, str) else None)

    def check_keys(self, node: Mapping[str, Any], allowed: tuple[str, ...], path: str,
                   what: str) -> None:
        for k in node:
            if k not in allowed:
                raise _Skip(f"{path}.{k}: unknown {what} field (supported: "
                            f"{', '.join(allowed)})", _line(node, k))

    # -- selectors -------------------------------------------------------------------------------
    def label_selector(self, sel: Any, path: str, node: Any, key: str) -> _LabelSel:
        """Parse a LabelSelector; raises _Skip for what cannot be evaluated."""
        if sel is None:
            sel = {}
        if not isinstance(sel, Mapping):
            raise self.bad(f"{path} must be a mapping (a label selector)", node, key)
        self.check_keys(sel, ("matchLabels", "matchExpressions"), path, "selector")
        ml = sel.get("matchLabels") or {}
        if not isinstance(ml, Mapping):
            raise self.bad(f"{path}.matchLabels must be a mapping", sel, "matchLabels")
        eq = {str(k): str(v) for k, v in ml.items()}
        tests: list[Callable[[Mapping[str, str]], bool]] = []
        exprs = sel.get("matchExpressions") or []
        if not isinstance(exprs, list):
            raise self.bad(f"{path}.matchExpressions must be a list", sel, "matchExpressions")
        for i, ex in enumerate(exprs):
            here = f"{path}.matchExpressions[{i}]"
            if not isinstance(ex, Mapping):
                raise self.bad(f"{here} must be a mapping", exprs, i)
            self.check_keys(ex, ("key", "operator", "values"), here, "expression")
            k, op, values = ex.get("key"), ex.get("operator"), ex.get("values") or []
            if not isinstance(k, str) or not isinstance(values, list):
                raise self.bad(f"{here}: needs a string key and a list of values", exprs, i)
            vals = frozenset(str(v) for v in values)
            if op in ("In", "NotIn") and not vals:
                raise self.bad(f"{here}: operator {op} needs values", ex, "values")
            if op in ("Exists", "DoesNotExist") and vals:
                raise self.bad(f"{here}: operator {op} takes no values", ex, "values")
            if op == "In":
                tests.append(lambda lb, k=k, v=vals: lb.get(k) in v)
            elif op == "NotIn":
                tests.append(lambda lb, k=k, v=vals: lb.get(k) not in v)
            elif op == "Exists":
                tests.append(lambda lb, k=k: k in lb)
            elif op == "DoesNotExist":
                tests.append(lambda lb, k=k: k not in lb)
            else:
                raise _Skip(f"{here}.operator: {op!r} is not supported "
                            "(In, NotIn, Exists, DoesNotExist)", _line(ex, "operator"))

        def match(lb: Mapping[str, str]) -> bool:
            return all(lb.get(k) == v for k, v in eq.items()) and all(t(lb) for t in tests)
        return _LabelSel(match, None if tests else eq)

    def pods_where(self, ns_match: Callable[[str], bool],
                   pod_match: Callable[[Mapping[str, str]], bool]) -> frozenset[str]:
        return frozenset(k for k, p in self.inv.pods.items()
                         if ns_match(p.namespace) and pod_match(p.labels))

    # -- peers and ports -------------------------------------------------------------------------
    def peer(self, pd: Any, ns: str, path: str, node: Any, idx: int) -> _Set:
        if not isinstance(pd, Mapping):
            raise self.bad(f"{path} must be a mapping", node, idx)
        self.check_keys(pd, ("podSelector", "namespaceSelector", "ipBlock"), path, "peer")
        if "ipBlock" in pd:
            if len(pd) > 1:
                raise _Skip(f"{path}: ipBlock cannot be combined with selectors",
                            _line(pd, "ipBlock"))
            return self.ip_block(pd["ipBlock"], f"{path}.ipBlock", pd)
        if not pd:
            raise _Skip(f"{path}: empty peer (needs podSelector, namespaceSelector or ipBlock)",
                        _line(node, idx))
        pod = self.label_selector(pd.get("podSelector"), f"{path}.podSelector", pd,
                                  "podSelector")
        hint: dict[str, str] | None = dict(pod.hint) if pod.hint is not None else None
        if "namespaceSelector" in pd:
            nss = self.label_selector(pd["namespaceSelector"], f"{path}.namespaceSelector", pd,
                                      "namespaceSelector")
            names = {n for n, lb in self.inv.namespaces.items() if nss.match(lb)}
            if hint is not None and nss.hint is not None:
                hint.update({f"k8s:ns:{k}": v for k, v in nss.hint.items()})
            else:
                hint = None
            pods = self.pods_where(names.__contains__, pod.match)
        else:
            if hint is not None:
                hint["k8s:namespace"] = ns
            pods = self.pods_where(lambda n: n == ns, pod.match)
        return _Set(pods, (tuple(sorted(hint.items())),) if hint is not None else ())

    def ip_block(self, ib: Any, path: str, node: Any) -> _Set:
        if not isinstance(ib, Mapping):
            raise self.bad(f"{path} must be a mapping with cidr", node, "ipBlock")
        self.check_keys(ib, ("cidr", "except"), path, "ipBlock")
        cidr = self.cidr(ib.get("cidr"), f"{path}.cidr", ib, "cidr")
        exc = []
        lst = ib.get("except") or []
        if not isinstance(lst, list):
            raise self.bad(f"{path}.except must be a list", ib, "except")
        for i, x in enumerate(lst):
            net = self.cidr(x, f"{path}.except[{i}]", lst, i)
            if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
                raise self.bad(f"{path}.except[{i}]: {net} is not inside {cidr}", lst, i)
            exc.append(net)
        return _Set(blocks=((cidr, tuple(exc)),))

    def cidr(self, value: Any, path: str, node: Any, key: Any) -> IPNetwork:
        if isinstance(value, str):
            try:
                return ipaddress.ip_network(value)
            except ValueError:
                pass
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
            else:
                self.warn(f"{path}: {value} has host bits set; read as {net}",
                          _line(node, key))
                return net
        raise self.bad(f"{path}: {value!r} is not a CIDR", node, key)

    def ports(self, lst: Any, path: str, node: Any) -> PortSet | None:
        if lst is None or lst == []:
            return None
        if not isinstance(lst, list):
            raise self.bad(f"{path} must be a list", node, "ports")
        specs: list[PortSpec] = []
        for i, pe in enumerate(lst):
            try:
                specs.append(self.port(pe, f"{path}[{i}]", lst, i))
            except _Skip as s:
                self.skipped(s, "this port entry is dropped (the rule allows less)")
        if not specs:
            raise _Skip(f"{path}: no supported port entry left", _line(node, "ports"))
        return PortSet.of(specs)

    def port(self, pe: Any, path: str, node: Any, idx: int) -> PortSpec:
        if not isinstance(pe, Mapping):
            raise self.bad(f"{path} must be a mapping", node, idx)
        self.check_keys(pe, ("protocol", "port", "endPort"), path, "port")
        proto = pe.get("protocol", "TCP")
        if proto == "SCTP":
            raise _Skip(f"{path}.protocol: SCTP is not supported", _line(pe, "protocol"))
        if proto not in ("TCP", "UDP"):
            raise _Skip(f"{path}.protocol: {proto!r} is not supported (TCP, UDP)",
                        _line(pe, "protocol"))
        port, end = pe.get("port"), pe.get("endPort")
        if port is None:
            if end is not None:
                raise self.bad(f"{path}.endPort: given without port", pe, "endPort")
            return PortSpec(proto.lower())
        if isinstance(port, str):
            raise _Skip(f"{path}.port: named port {port!r} cannot be resolved "
                        "(the inventory has no container ports)", _line(pe, "port"))
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise self.bad(f"{path}.port: {port!r} is not a port 1-65535", pe, "port")
        if end is None:
            return PortSpec(proto.lower(), port)
        if not isinstance(end, int) or isinstance(end, bool) or not port <= end <= 65535:
            raise self.bad(f"{path}.endPort: {end!r} must be a port from {port} to 65535",
                           pe, "endPort")
        return PortSpec(proto.lower(), f"{port}-{end}")

    # -- rules and policies ----------------------------------------------------------------------
    def rule(self, rd: Any, ns: str, pname: str, direction: str, i: int,
             sel: frozenset[str], hint: dict[str, str] | None, node: Any) -> _KRule | None:
        path = f"spec.{direction}[{i}]"
        peer_key = "from" if direction == "ingress" else "to"
        name = f"{ns}/{pname}:{direction}[{i}]"
        if rd is None:
            rd = {}
        if not isinstance(rd, Mapping):
            raise self.bad(f"{path} must be a mapping", node, i)
        try:
            self.check_keys(rd, (peer_key, "ports"), path, "rule")
            peers: _Set | None = None
            raw = rd.get(peer_key)
            if raw:
                if not isinstance(raw, list):
                    raise self.bad(f"{path}.{peer_key} must be a list", rd, peer_key)
                peers = _Set()
                kept = 0
                for j, pd in enumerate(raw):
                    try:
                        peers = peers | self.peer(pd, ns, f"{path}.{peer_key}[{j}]", raw, j)
                        kept += 1
                    except _Skip as s:
                        self.skipped(s, "this peer is dropped (the rule allows less)")
                if not kept:
                    raise _Skip(f"{path}.{peer_key}: no supported peer left",
                                _line(rd, peer_key))
            ports = self.ports(rd.get("ports"), f"{path}.ports", rd)
        except _Skip as s:
            self.skipped(s, f"rule {name} is dropped (it allows nothing)")
            return None
        return _KRule(name, sel, hint, peers, ports)

    def policy(self, doc: Mapping[str, Any]) -> _KPolicy | None:
        for k in doc:
            if k not in ("apiVersion", "kind", "metadata", "spec"):
                self.warn(f"{k}: unknown field, ignored", _line(doc, k))
        meta = doc.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            raise self.bad("a NetworkPolicy needs metadata.name", doc, "metadata")
        ns = meta.get("namespace") or "default"
        pname = meta["name"]
        self.prefix = f"networkpolicy {ns}/{pname}: "
        for k in meta:
            if k not in ("name", "namespace") + META_IGNORED:
                self.warn(f"metadata.{k}: unknown field, ignored", _line(meta, k))
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise self.bad("spec must be a mapping", doc, "spec")
        for k in spec:
            if k not in ("podSelector", "policyTypes", "ingress", "egress"):
                self.warn(f"spec.{k}: unknown field, ignored", _line(spec, k))
        if "podSelector" not in spec:
            raise self.bad("spec.podSelector is required ({} selects every pod)", doc, "spec")
        try:
            ps = self.label_selector(spec["podSelector"], "spec.podSelector", spec,
                                     "podSelector")
        except _Skip as s:
            self.skipped(s, "the whole policy is skipped (its pods are not isolated by it)")
            return None
        selected = self.pods_where(lambda n: n == ns, ps.match)
        hint = {**ps.hint, "k8s:namespace": ns} if ps.hint is not None else None
        ingress, egress = spec.get("ingress"), spec.get("egress")
        for key, val in (("ingress", ingress), ("egress", egress)):
            if val is not None and not isinstance(val, list):
                raise self.bad(f"spec.{key} must be a list", spec, key)
        types = spec.get("policyTypes")
        if types is None:
            tset = {"Ingress"} | ({"Egress"} if egress else set())
        else:
            if not isinstance(types, list):
                raise self.bad("spec.policyTypes must be a list", spec, "policyTypes")
            tset = set()
            for t in types:
                if t in ("Ingress", "Egress"):
                    tset.add(t)
                else:
                    self.warn(f"spec.policyTypes: {t!r} is not supported (Ingress, Egress), "
                              "ignored", _line(spec, "policyTypes"))
        out = _KPolicy(f"{ns}/{pname}", selected, hint, tset, [], [])
        for key, lst, typ in (("ingress", ingress, "Ingress"), ("egress", egress, "Egress")):
            if lst and typ not in tset:
                self.warn(f"spec.{key}: given but policyTypes lacks {typ}; ignored, as "
                          "Kubernetes does", _line(spec, key))
                continue
            for i, rd in enumerate(lst or []):
                r = self.rule(rd, ns, pname, key, i, selected, hint, lst)
                if r is not None:
                    getattr(out, key).append(r)
        return out

    # -- building the policy -------------------------------------------------------------------
    def selectors(self, s: _Set, identities: list[Identity]) -> list[Selector]:
        out: list[Selector] = []
        if s.pods:
            if s.pods == frozenset(self.inv.pods):
                out.append(Selector.any())
            else:
                hinted = [Selector(dict(h)) for h in dict.fromkeys(s.hints)]
                got = {i.name for i in identities if any(h.matches(i) for h in hinted)}
                if hinted and got == s.pods:
                    out += hinted
                else:
                    out += [Selector({"k8s:pod": k}) for k in sorted(s.pods)]
        for cidr, exc in s.blocks:
            out.append(Selector(cidrs=[cidr], excepts=exc))
        if s.ips:
            out.append(Selector(cidrs=sorted(s.ips, key=lambda n: (n.version, n))))
        return list(dict.fromkeys(out))

    def build(self, pols: list[_KPolicy], name: str) -> Policy:
        inv = self.inv
        self.file, self.prefix = None, ""
        pods_by_ip: dict[IPNetwork, str] = {}
        for p in inv.pods.values():
            for ip in p.ips:
                if ip in pods_by_ip:
                    self.warn(f"inventory: pods {pods_by_ip[ip]} and {p.key} share IP {ip}")
                pods_by_ip[ip] = p.key
        identities = [inv.identity(p) for p in inv.pods.values()]
        iso_in = frozenset(k for p in pols if "Ingress" in p.types for k in p.selected)
        iso_eg = frozenset(k for p in pols if "Egress" in p.types for k in p.selected)
        ing = [r for p in pols for r in p.ingress]
        eg = [r for p in pols for r in p.egress]
        rules: list[Rule] = []

        def emit(rname: str, src: _Set, dst: _Set, ports: PortSet | None, desc: str) -> None:
            if ports is not None and not ports:
                return
            s, d = self.selectors(src, identities), self.selectors(dst, identities)
            if s and d:
                rules.append(Rule(rname, "allow", s, d, ports.to_specs() if ports else None,
                                  desc))

        def pods_set(keys: frozenset[str], hint: dict[str, str] | None) -> _Set:
            return _Set(keys, (tuple(sorted(hint.items())),) if hint is not None else ())

        emit("k8s:non-isolated", _ALL_SET.minus_pods(iso_eg, inv),
             _ALL_SET.minus_pods(iso_in, inv), None,
             "traffic between addresses no policy isolates in that direction")
        for r in ing:
            emit(r.name, (r.peers or _ALL_SET).minus_pods(iso_eg, inv),
                 pods_set(r.selected, r.sel_hint), r.ports,
                 "ingress rule, from sources whose egress is not isolated")
        for r in eg:
            emit(r.name, pods_set(r.selected, r.sel_hint),
                 (r.peers or _ALL_SET).minus_pods(iso_in, inv), r.ports,
                 "egress rule, to destinations whose ingress is not isolated")
        for e in eg:
            for i in ing:
                if e.ports is not None and i.ports is not None:
                    ports: PortSet | None = e.ports & i.ports
                else:
                    ports = e.ports if e.ports is not None else i.ports
                emit(f"{e.name}+{i.name}", (i.peers or _ALL_SET).restrict(e.selected, inv),
                     (e.peers or _ALL_SET).restrict(i.selected, inv), ports,
                     "where an egress rule and an ingress rule both allow")
        return Policy(identities, rules, "deny", name=name,
                      description="imported from Kubernetes NetworkPolicy objects")


def _load_docs(docs: Docs) -> list[tuple[str | None, Any]]:
    """``(file, document)`` for every document given or in the files given."""
    items: list[Any]
    if isinstance(docs, (str, Path, Mapping)):
        items = [docs]
    else:
        items = list(docs)
    out: list[tuple[str | None, Any]] = []
    for item in items:
        if isinstance(item, Mapping):
            out.append((None, item))
            continue
        path = str(item)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
        try:
            # yamlsrc's SafeLoader subclass, for line numbers in every document
            loaded = list(yaml.load_all(text, Loader=yamlsrc._Loader))  # noqa: S506
        except ConfigError as e:
            raise ConfigError(e.message, file=path, line=e.line, key=e.key) from None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise ConfigError(f"YAML syntax: {e.problem or e.context}", file=path,
                              line=mark.line + 1 if mark else None) from None
        out += [(path, d) for d in loaded if d is not None]
    return out


def import_k8s(policy_docs: Docs, inventory: Mapping[str, Any] | str | Path,
               name: str = "k8s") -> tuple[Policy, list[str]]:
    """Kubernetes NetworkPolicy objects as a policy, and warnings naming what is not supported.

    ``policy_docs``: NetworkPolicy mappings, or YAML file path(s) (multi-doc, ``kind: List``).
    ``inventory``: a mapping or YAML path with ``pods`` and ``namespaces`` (module docstring).
    Malformed objects (what the API server would refuse) raise ConfigError naming the file
    and line.
    """
    inv = Inventory.load(inventory)
    imp = _Importer(inv)
    pols: list[_KPolicy] = []
    todo = _load_docs(policy_docs)
    while todo:
        file, doc = todo.pop(0)
        imp.file, imp.prefix = file, ""
        if not isinstance(doc, Mapping):
            raise imp.bad("a Kubernetes object must be a mapping", doc)
        kind, api = doc.get("kind"), doc.get("apiVersion")
        if kind == "List" and isinstance(doc.get("items"), list):
            todo[:0] = [(file, d) for d in doc["items"]]
            continue
        if kind != "NetworkPolicy" or api != API_VERSION:
            imp.warn(f"{api}/{kind} is not a {API_VERSION} NetworkPolicy; skipped", _line(doc))
            continue
        p = imp.policy(doc)
        if p is not None:
            pols.append(p)
    return imp.build(pols, name), imp.warnings


__all__ = ["Inventory", "Pod", "import_k8s"]
