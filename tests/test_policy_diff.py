"""Policy diffs: rules and identities added/removed/changed, and the reach each pair of
endpoints gains or loses under the evaluator's semantics (deny wins, default deny).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydp.policy.diff import PolicyDiff, diff, reach
from pydp.policy.model import Identity, Policy, PortSet, PortSpec, Rule

FIREWALL_POLICY = (Path(__file__).resolve().parent.parent / "pipelines" / "policies"
                   / "firewall.yaml")


def ids() -> list[Identity]:
    return [Identity("web", {"app": "web", "env": "prod"}, ["10.0.1.0/24", "fd00:1::/64"]),
            Identity("api", {"app": "api", "env": "prod"}, ["10.0.2.0/24", "fd00:2::/64"]),
            Identity("db", {"app": "db", "env": "prod"}, ["10.0.3.10"])]


def base_rules() -> list[Rule]:
    return [Rule("web-api", "allow", {"app": "web"}, {"app": "api"}, ["tcp/8080"]),
            Rule("api-db", "allow", {"app": "api"}, {"app": "db"}, ["tcp/5432"])]


def ports(text: str) -> PortSet:
    return PortSet.of([PortSpec.parse(t) for t in text.split()])


def test_reach_of_a_policy():
    p = Policy(ids(), base_rules() + [
        Rule("all-to-db", "allow", "any", {"app": "db"}, ["tcp/5432-5440"]),
        Rule("no-5433", "deny", {"app": "web"}, "any", ["tcp/5433"])])
    got = {(r.src, r.dst): (str(r.ports), r.partial) for r in reach(p)}
    assert got == {
        ("web", "api"): ("tcp/8080", False),
        ("api", "db"): ("tcp/5432-5440", False),
        ("web", "db"): ("tcp/5432,5434-5440", False),  # the deny cuts 5433 out
        ("db", "db"): ("tcp/5432-5440", False),
    }


def test_no_differences():
    d = diff(Policy(ids(), base_rules()), Policy(ids(), base_rules()))
    assert not d and d.format() == "no differences"
    assert d.to_dict()["reach"] == {"gained": [], "lost": []}


def test_rule_added_gains_reach():
    new = Policy(ids(), base_rules() + [Rule("web-db", "allow", {"app": "web"}, {"app": "db"},
                                            ["tcp/5432"])])
    d = diff(Policy(ids(), base_rules()), new)
    assert d.rules_added == ["web-db"] and not d.rules_removed and not d.rules_changed
    g = d.gained("web", "db")
    assert g is not None and g.ports == ports("tcp/5432") and not g.partial
    assert not d.reach_lost and len(d.reach_gained) == 1
    text = d.format()
    assert "+ web-db: allow app=web -> app=db tcp/5432" in text
    assert "+ web -> db: tcp/5432" in text


def test_rule_removed_loses_reach():
    d = diff(Policy(ids(), base_rules()), Policy(ids(), base_rules()[:1]))
    assert d.rules_removed == ["api-db"]
    assert d.lost("api", "db").ports == ports("tcp/5432")
    assert not d.reach_gained


def test_rule_changed_lists_fields_and_port_deltas():
    new_rules = base_rules()
    new_rules[0] = Rule("web-api", "allow", {"app": "web"}, {"app": "api"},
                        ["tcp/8080-8081", "udp/53"], description="now with DNS")
    d = diff(Policy(ids(), base_rules()), Policy(ids(), new_rules))
    assert [c.name for c in d.rules_changed] == ["web-api"]
    ch = d.rules_changed[0].changes
    assert ch["ports"] == ("tcp/8080", "tcp/8080-8081 udp/53")
    assert ch["description"] == ("", "now with DNS")
    assert "from" not in ch and "action" not in ch
    assert d.gained("web", "api").ports == ports("tcp/8081 udp/53")
    assert not d.reach_lost
    assert "~ web-api: ports tcp/8080 -> tcp/8080-8081 udp/53" in d.format()


def test_deny_added_loses_only_what_it_denies():
    new = Policy(ids(), base_rules() + [Rule("no-api", "deny", "any", {"app": "api"},
                                            ["tcp/8080"])])
    d = diff(Policy(ids(), base_rules()), new)
    assert d.rules_added == ["no-api"]
    assert [(r.src, r.dst, str(r.ports)) for r in d.reach_lost] == [("web", "api", "tcp/8080")]
    assert d.lost("api", "db") is None


def test_default_change_and_selector_change():
    old = Policy(ids(), base_rules())
    new = Policy(ids(), [Rule("web-api", "allow", {"env": "prod"}, {"app": "api"},
                              ["tcp/8080"]), base_rules()[1]], default="allow")
    d = diff(old, new)
    assert d.default == ("deny", "allow")
    assert d.rules_changed[0].changes == {"from": ("app=web", "env=prod")}
    # default allow: everybody reaches everybody, minus nothing
    assert d.gained("db", "web").ports == PortSet.all()
    assert str(d.gained("db", "web").ports) == "any"
    assert d.gained("web", "api").ports == PortSet.all() - ports("tcp/8080")
    assert str(d.gained("web", "api").ports) == "any except tcp/8080"


def test_identity_changes_give_partial_reach():
    new_ids = ids()
    new_ids[0] = Identity("web", {"app": "web", "env": "prod"},
                          ["10.0.1.0/24", "10.0.9.0/24", "fd00:1::/64"])
    new_ids.append(Identity("cache", {"app": "cache"}, ["10.0.4.0/24"]))
    d = diff(Policy(ids(), base_rules()), Policy(new_ids, base_rules()))
    assert d.identities_added == ["cache"]
    assert [c.name for c in d.identities_changed] == ["web"]
    assert d.identities_changed[0].changes["addresses"][1].startswith("10.0.1.0/24,10.0.9.0/24")
    g = d.gained("web", "api")
    assert g.ports == ports("tcp/8080") and g.partial
    assert [(a, b) for a, b, _ in g.detail] == [("10.0.9.0/24", "10.0.2.0/24")]
    assert "(some addresses)" in d.format() and "10.0.9.0/24 -> 10.0.2.0/24" in d.format()


def test_cidr_endpoints():
    old = Policy(ids(), base_rules())
    new = Policy(ids(), base_rules() + [
        Rule("in-https", "allow", {"cidr": ["198.51.100.0/24", "2001:db8::/32"]},
             {"app": "web"}, ["tcp/443"]),
        Rule("no-bad", "deny", {"cidr": "198.51.100.128/25"}, "any")])
    d = diff(old, new)
    # the deny's /25 is its own endpoint, so the /24 endpoint keeps the other half
    g = d.gained("cidr:198.51.100.0/24,2001:db8::/32", "web")
    assert g.ports == ports("tcp/443") and not g.partial
    assert d.gained("cidr:198.51.100.128/25", "web") is None


def test_to_dict_is_json_and_firewall_diff():
    old = Policy.load(FIREWALL_POLICY)
    data = old.to_data()
    data["rules"] = [r for r in data["rules"] if r["name"] != "web-never-to-db"]
    data["rules"][1]["ports"] = [{"proto": "tcp", "ports": "8080-8090"}]
    new = Policy.from_data(data)
    d = diff(old, new)
    assert isinstance(d, PolicyDiff)
    js = json.loads(json.dumps(d.to_dict()))
    assert js["rules"]["removed"] == ["web-never-to-db"]
    assert js["rules"]["changed"] == [{"name": "web-to-api", "changes": {
        "ports": {"old": "tcp/8080", "new": "tcp/8080-8090"}}}]
    # removing the deny rule gains nothing: no allow rule covered web -> db
    assert {(r["from"], r["to"], r["ports"]) for r in js["reach"]["gained"]} == {
        ("web", "api", "tcp/8081-8090")}
    assert js["reach"]["lost"] == []
    print("\n" + d.format())
