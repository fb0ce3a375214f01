"""Kubernetes NetworkPolicy import, on the examples of Kubernetes' own documentation
(tests/data/k8s/*.yaml) against an inventory of pods. Each imported policy is checked
flow by flow with expected_verdict, and against an independent, direct implementation
of the NetworkPolicy semantics (`k8s_allows` below) over every pair of addresses.
"""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest
import yaml

from pydp import ConfigError
from pydp.policy.compile import compile_policy, expected_verdict, explain
from pydp.policy.k8s import Inventory, import_k8s
from pydp.policy.model import Policy

DATA = Path(__file__).resolve().parent / "data" / "k8s"
INV = DATA / "inventory.yaml"
EXAMPLES = ["default-deny-ingress.yaml", "allow-all-ingress.yaml", "networkpolicy.yaml",
            "allow-from-namespace.yaml", "default-deny-egress.yaml", "multi-port-egress.yaml",
            "egress-namespaces.yaml", "expressions.yaml", "ipblock-pods.yaml"]

DB, FRONTEND, BACKEND, MYAPP, TIERED = ("10.244.0.10", "10.244.0.11", "10.244.0.12",
                                        "10.244.0.13", "10.244.0.14")
WORKER, INTRUDER, CLIENT, SERVER = "10.244.1.10", "10.244.2.10", "10.244.3.10", "10.244.3.11"
WEB, API, DB6, WEB6 = "10.244.4.10", "10.244.5.10", "fd00:244::10", "fd00:244::4:10"
EXTERNAL = ["172.17.0.5", "172.17.1.5", "10.0.0.5", "10.0.1.5", "8.8.8.8", "2001:db8::1"]
FLOWS = [("tcp", 6379), ("tcp", 5978), ("tcp", 80), ("tcp", 8080), ("udp", 53), ("udp", 6379),
         ("tcp", 32000), ("tcp", 32768), ("tcp", 32769), ("icmp", 0)]


def load(*names: str) -> tuple[Policy, list[str]]:
    return import_k8s([DATA / n for n in names], INV)


def allowed(p: Policy, src: str, dst: str, proto: str = "tcp", port: int = 80) -> bool:
    return expected_verdict(p, src, dst, proto, 40000, port)[0] == "allow"


# -- an independent reference: NetworkPolicy semantics straight from the objects -------------
def _sel_matches(sel, labels) -> bool:
    sel = sel or {}
    if any(labels.get(k) != str(v) for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for ex in sel.get("matchExpressions") or []:
        k, op, vals = ex["key"], ex["operator"], [str(v) for v in ex.get("values") or []]
        ok = {"In": labels.get(k) in vals, "NotIn": labels.get(k) not in vals,
              "Exists": k in labels, "DoesNotExist": k not in labels}[op]
        if not ok:
            return False
    return True


def k8s_allows(docs, inv: Inventory, src: str, dst: str, proto: str, port: int) -> bool:
    by_ip = {ip.network_address: p for p in inv.pods.values() for ip in p.ips}
    s_ip, d_ip = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s_ip.version != d_ip.version:
        return False

    def peer_has(peer, ns, ip) -> bool:
        if "ipBlock" in peer:
            b = peer["ipBlock"]
            return (ip in ipaddress.ip_network(b["cidr"])
                    and not any(ip in ipaddress.ip_network(x) for x in b.get("except", [])))
        pod = by_ip.get(ip)
        if pod is None:
            return False
        if "namespaceSelector" in peer:
            if not _sel_matches(peer["namespaceSelector"], inv.namespaces[pod.namespace]):
                return False
        elif pod.namespace != ns:
            return False
        return _sel_matches(peer.get("podSelector"), pod.labels)

    def port_ok(entries) -> bool:
        if not entries:
            return True
        for e in entries:
            if e.get("protocol", "TCP").lower() == proto:
                if "port" not in e or e["port"] <= port <= e.get("endPort", e["port"]):
                    return True
        return False

    def side_ok(pod_ip, other_ip, direction: str, ptype: str, peer_key: str) -> bool:
        pod = by_ip.get(pod_ip)
        if pod is None:
            return True  # not a pod: never isolated
        isolated, ok = False, False
        for d in docs:
            spec, ns = d["spec"], d["metadata"].get("namespace", "default")
            types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress")
                                                              else []))
            if ns != pod.namespace or not _sel_matches(spec["podSelector"], pod.labels):
                continue
            if ptype in types:
                isolated = True
                for rule in spec.get(direction) or []:
                    peers = rule.get(peer_key)
                    if (not peers or any(peer_has(pr, ns, other_ip) for pr in peers)) \
                            and port_ok(rule.get("ports")):
                        ok = True
        return ok or not isolated

    return (side_ok(s_ip, d_ip, "egress", "Egress", "to")
            and side_ok(d_ip, s_ip, "ingress", "Ingress", "from"))


def all_docs(*names: str) -> list[dict]:
    return [d for n in names for d in yaml.safe_load_all((DATA / n).read_text()) if d]


ALL_ADDRESSES = [DB, FRONTEND, BACKEND, MYAPP, TIERED, WORKER, INTRUDER, CLIENT, SERVER, WEB,
                 API, DB6, WEB6] + EXTERNAL


COMBINED = {"all-together": EXAMPLES,
            "egress-and-ingress": ["networkpolicy.yaml", "frontend-egress.yaml"],
            "deny-all-both-ways": ["default-deny-ingress.yaml", "default-deny-egress.yaml",
                                   "networkpolicy.yaml", "frontend-egress.yaml",
                                   "allow-from-namespace.yaml", "ipblock-pods.yaml"]}


@pytest.mark.parametrize("names", [[n] for n in EXAMPLES] + list(COMBINED.values()),
                         ids=EXAMPLES + list(COMBINED))
def test_import_matches_reference_semantics(names):
    p, warnings = load(*names)
    assert warnings == []
    inv = Inventory.load(INV)
    docs = all_docs(*names)
    for src, dst in itertools.product(ALL_ADDRESSES, repeat=2):
        for proto, port in FLOWS:
            want = k8s_allows(docs, inv, src, dst, proto, port)
            got = expected_verdict(p, src, dst, proto, 40000, port)[0] == "allow"
            assert got == want, (names, explain(p, src, dst, proto, 40000, port), want)
    acl, n_ids = compile_policy(p)
    assert n_ids == len(p.rules) and acl


# -- the documentation's examples, flow by flow -------------------------------------------------
def test_no_policy_allows_everything():
    p, warnings = import_k8s([], INV)
    assert warnings == [] and [r.name for r in p.rules] == ["k8s:non-isolated"]
    assert allowed(p, INTRUDER, DB) and allowed(p, "8.8.8.8", WEB, "udp", 53)


def test_default_deny_ingress():
    p, _ = load("default-deny-ingress.yaml")
    # every pod of `default` is isolated for ingress and nothing lets traffic in
    for src in (FRONTEND, WORKER, "8.8.8.8"):
        assert expected_verdict(p, src, DB, "tcp", 1, 80) == ("deny", None)
    # other namespaces are untouched, and egress from default still works
    assert allowed(p, FRONTEND, WORKER) and allowed(p, DB, "8.8.8.8")
    assert allowed(p, WORKER, CLIENT)


def test_allow_all_ingress():
    p, _ = load("default-deny-ingress.yaml", "allow-all-ingress.yaml")
    assert allowed(p, "8.8.8.8", DB) and allowed(p, INTRUDER, FRONTEND, "udp", 53)
    assert expected_verdict(p, INTRUDER, DB, "tcp", 1, 80)[1] == \
        "default/allow-all-ingress:ingress[0]"


def test_test_network_policy():
    p, warnings = load("networkpolicy.yaml")
    assert warnings == []
    # ingress to role=db on TCP 6379 from: the ipBlock minus except, namespace
    # project=myproject, and role=frontend pods of the policy's own namespace
    assert expected_verdict(p, FRONTEND, DB, "tcp", 1, 6379) == (
        "allow", "default/test-network-policy:ingress[0]")
    assert allowed(p, WORKER, DB, "tcp", 6379)
    assert allowed(p, "172.17.0.5", DB, "tcp", 6379)
    assert not allowed(p, "172.17.1.5", DB, "tcp", 6379)  # except 172.17.1.0/24
    assert not allowed(p, INTRUDER, DB, "tcp", 6379)  # role=frontend, but another namespace
    assert not allowed(p, BACKEND, DB, "tcp", 6379)
    assert not allowed(p, FRONTEND, DB, "tcp", 6380)
    assert not allowed(p, FRONTEND, DB, "udp", 6379)
    # egress from role=db: only 10.0.0.0/24 on TCP 5978
    assert expected_verdict(p, DB, "10.0.0.5", "tcp", 1, 5978) == (
        "allow", "default/test-network-policy:egress[0]")
    assert not allowed(p, DB, "10.0.0.5", "tcp", 80)
    assert not allowed(p, DB, "10.0.1.5", "tcp", 5978)
    assert not allowed(p, DB, FRONTEND, "tcp", 80)  # db is egress-isolated
    # the pod with no IP is selected too, but has nothing to compile; db's IPv6
    # address is isolated like its IPv4 one
    assert not allowed(p, WEB6, DB6, "tcp", 6379)
    # everybody else is not isolated
    assert allowed(p, FRONTEND, BACKEND) and allowed(p, "8.8.8.8", FRONTEND)
    assert allowed(p, WEB6, "2001:db8::1", "udp", 53)


def test_allow_from_a_namespace():
    p, _ = load("allow-from-namespace.yaml")
    # namespaceSelector alone: every pod of namespaces labelled user=alice
    assert allowed(p, CLIENT, FRONTEND) and allowed(p, SERVER, FRONTEND)
    assert not allowed(p, WORKER, FRONTEND) and not allowed(p, DB, FRONTEND)
    # namespaceSelector and podSelector in one peer: role=client pods of those namespaces
    assert allowed(p, CLIENT, BACKEND) and not allowed(p, SERVER, BACKEND)
    assert not allowed(p, "8.8.8.8", BACKEND)
    # the selectors come out as readable labels, not pod lists
    assert p.rule("default/allow-alice-clients:ingress[0]").to_data()["from"] == {
        "k8s:ns:user": "alice", "role": "client"}


def test_egress_policies():
    p, _ = load("default-deny-egress.yaml", "multi-port-egress.yaml")
    assert not allowed(p, FRONTEND, "8.8.8.8") and not allowed(p, FRONTEND, WORKER)
    assert allowed(p, WORKER, FRONTEND)  # ingress of default is not isolated
    assert allowed(p, DB, "10.0.0.5", "tcp", 32000) and allowed(p, DB, "10.0.0.5", "tcp", 32768)
    assert not allowed(p, DB, "10.0.0.5", "tcp", 32769)
    assert not allowed(p, DB, "10.0.0.5", "udp", 32000)
    p, _ = load("egress-namespaces.yaml")
    assert allowed(p, MYAPP, WEB) and allowed(p, MYAPP, API)
    assert not allowed(p, MYAPP, WORKER) and not allowed(p, MYAPP, "8.8.8.8")
    # matchExpressions have no label-selector equivalent: explicit pods instead
    assert p.rule("default/egress-namespaces:egress[0]").to_data()["to"] == [
        {"k8s:pod": "backend/api"}, {"k8s:pod": "frontend/web"}]


def test_ingress_and_egress_both_required():
    p, warnings = import_k8s(all_docs("networkpolicy.yaml", "frontend-egress.yaml"), INV)
    assert warnings == []
    # frontend's egress allows 6379-6380 to db, db's ingress allows 6379 from frontend
    assert expected_verdict(p, FRONTEND, DB, "tcp", 1, 6379) == (
        "allow", "default/frontend-out:egress[0]+default/test-network-policy:ingress[0]")
    assert not allowed(p, FRONTEND, DB, "tcp", 6380)
    assert not allowed(p, FRONTEND, BACKEND)
    assert allowed(p, WORKER, DB, "tcp", 6379)


def test_ipblocks_cover_pod_addresses():
    p, _ = load("ipblock-pods.yaml")
    assert allowed(p, FRONTEND, BACKEND, "tcp", 8080)  # egress /22 and ingress /16 agree
    assert allowed(p, WORKER, BACKEND, "tcp", 8080)
    assert not allowed(p, INTRUDER, BACKEND, "tcp", 8080)  # except 10.244.2.0/24
    assert not allowed(p, FRONTEND, BACKEND, "tcp", 80)
    assert allowed(p, FRONTEND, WORKER) and not allowed(p, FRONTEND, "8.8.8.8")
    assert not allowed(p, FRONTEND, WEB)  # 10.244.4.10 is outside the /22


def test_identities_are_pods():
    p, _ = load("networkpolicy.yaml")
    ident = p.identity("default/db")
    assert [str(a) for a in ident.addresses] == ["10.244.0.10/32", "fd00:244::10/128"]
    assert ident.labels["role"] == "db" and ident.labels["k8s:namespace"] == "default"
    assert p.identity("myproject/worker").labels["k8s:ns:project"] == "myproject"
    assert len(p.identities) == 12
    # the imported policy is an ordinary one: it dumps and loads back equal
    assert Policy.loads(p.to_yaml()) == p


# -- what is not supported is reported, by name, and fails closed ------------------------------
def test_unsupported_fields_are_reported_by_name():
    p, warnings = load("unsupported.yaml")
    text = "\n".join(warnings)
    for needle in ("unsupported.yaml:18:", "SCTP is not supported", "named port 'http'",
                   "someFutureField: unknown peer field", "'Near' is not supported",
                   "spec.spec2: unknown field", "v1/Service is not a networking.k8s.io/v1",
                   "rule default/odd:ingress[2] is dropped"):
        assert needle in text, (needle, text)
    assert all("networkpolicy default/odd" in w for w in warnings if "Service" not in w)
    # fail closed: only TCP 6379 from frontend survives
    assert [r.name for r in p.rules] == ["k8s:non-isolated", "default/odd:ingress[0]"]
    assert allowed(p, FRONTEND, DB, "tcp", 6379)
    assert not allowed(p, FRONTEND, DB, "tcp", 80)
    assert not allowed(p, BACKEND, DB, "tcp", 6379)


def test_list_kind_and_dict_input():
    docs = all_docs("networkpolicy.yaml")
    p1, _ = import_k8s({"apiVersion": "v1", "kind": "List", "items": docs},
                       yaml.safe_load(INV.read_text()))
    p2, _ = load("networkpolicy.yaml")
    assert p1 == p2


def test_malformed_inputs_raise_with_file_and_line(tmp_path):
    bad_inv = tmp_path / "inv.yaml"
    bad_inv.write_text("pods:\n  - name: a\n    ipz: [10.0.0.1]\n")
    with pytest.raises(ConfigError) as ei:
        import_k8s([], bad_inv)
    assert (ei.value.file, ei.value.line, ei.value.key) == (str(bad_inv), 3, "ipz")
    bad_inv.write_text("pods:\n  - name: a\n    ips: [10.0.0.0/24]\n")
    with pytest.raises(ConfigError, match="not a single address"):
        import_k8s([], bad_inv)
    bad = tmp_path / "np.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                   "metadata: {name: x}\nspec:\n  podSelector: {}\n  ingress:\n"
                   "  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}\n")
    with pytest.raises(ConfigError) as ei:
        import_k8s(bad, INV)
    assert ei.value.file == str(bad) and ei.value.line == 8 and "not inside" in str(ei.value)
