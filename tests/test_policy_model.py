"""The zero-trust policy model: YAML and Python build the same object, errors name the
file, line, key and rule, selectors, deny precedence, default deny, IPv6, the ACL
compile (cross product, ids, priorities, speed) and the reference evaluator.
Pure Python: no DPDK, no root needed by these tests themselves.
"""

from __future__ import annotations

import ipaddress
import random
import time
from pathlib import Path

import pytest

from pydp import ConfigError
from pydp.policy.compile import AclRule, compile_policy, expected_verdict, explain
from pydp.policy.model import Identity, Policy, PortSpec, Rule, Selector

ROOT = Path(__file__).resolve().parent.parent
FIREWALL_POLICY = ROOT / "pipelines" / "policies" / "firewall.yaml"

EXAMPLE = """\
identities:
  web: {labels: {app: web, env: prod}, addresses: [10.0.1.0/24, "fd00:1::/64"]}
  db:  {labels: {app: db, env: prod}, addresses: [10.0.2.10]}
rules:
  - {name: web-to-db, action: allow, from: {app: web}, to: {app: db}, ports: [{proto: tcp, port: 5432}]}
  - {name: no-ssh, action: deny, from: any, to: {env: prod}, ports: [{proto: tcp, port: 22}]}
default: deny
"""  # noqa: E501 - the brief's example, verbatim


def example_py() -> Policy:
    return Policy(
        identities=[Identity("web", {"app": "web", "env": "prod"}, ["10.0.1.0/24", "fd00:1::/64"]),
                    Identity("db", {"app": "db", "env": "prod"}, ["10.0.2.10"])],
        rules=[Rule("web-to-db", "allow", src={"app": "web"}, dst={"app": "db"},
                    ports=[{"proto": "tcp", "port": 5432}]),
               Rule("no-ssh", "deny", src="any", dst={"env": "prod"}, ports=["tcp/22"])])


# -- building ----------------------------------------------------------------------------------
def test_yaml_and_python_build_the_same_policy():
    y = Policy.loads(EXAMPLE, "example.yaml")
    assert y == example_py()
    assert [i.name for i in y.identities] == ["web", "db"]
    assert y.identity("db").addresses == (ipaddress.ip_network("10.0.2.10/32"),)
    assert y.rule("no-ssh").src == (Selector.any(),)
    assert y.default == "deny"


def test_to_yaml_round_trips():
    p = Policy.load(FIREWALL_POLICY)
    back = Policy.loads(p.to_yaml(), "dump.yaml")
    assert back == p
    assert back.to_yaml() == p.to_yaml()


def test_load_remembers_source(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(EXAMPLE)
    assert Policy.load(f).source == str(f)


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as ei:
        Policy.load(tmp_path / "nope.yaml")
    assert ei.value.file == str(tmp_path / "nope.yaml")


# -- errors: file, line, key, rule -----------------------------------------------------------------
BASE = """\
identities:
  web:
    labels: {app: web}
    addresses: [10.0.1.0/24]
  db:
    labels: {app: db}
    addresses: [10.0.2.10]
rules:
  - name: web-to-db
    action: allow
    from: {app: web}
    to: {app: db}
    ports:
      - proto: tcp
        port: 5432
default: deny
"""

BAD = [
    # (replace this, with this, line, key, words in the message)
    ("default: deny", "default: deny\nrulez: []", 17, "rulez", ["unknown key 'rulez'"]),
    ("    to: {app: db}\n", "    to: {app: db}\n    prots: []\n", 13, "prots",
     ["rule 'web-to-db'", "unknown key 'prots'"]),
    ("proto: tcp", "proto: tpc", 14, "proto", ["rule 'web-to-db'", "unknown protocol 'tpc'"]),
    ("port: 5432", "ports: \"2000-1000\"", 15, "ports", ["rule 'web-to-db'", "empty"]),
    ("port: 5432", "port: 70000", 15, "port", ["out of range"]),
    ("proto: tcp\n        port: 5432", "proto: icmp\n        port: 5432", 15, "port",
     ["need proto tcp or udp"]),
    ("[10.0.1.0/24]", "[10.0.1.1/24]", 4, "addresses",
     ["identity 'web'", "host bits", "10.0.1.0/24"]),
    ("labels: {app: db}", "labels: {app: db}\n    color: blue", 7, "color",
     ["identity 'db'", "unknown key 'color'"]),
    ("action: allow", "action: permit", 10, "action", ["rule 'web-to-db'", "allow or deny"]),
    ("    to: {app: db}\n", "", 9, "to", ["rule 'web-to-db'", "missing key 'to'"]),
    ("from: {app: web}", "from: {cidr: 10.0.0.0/8, exept: [10.1.0.0/16]}", 11, "exept",
     ["rule 'web-to-db'", "unknown key 'exept'"]),
    ("from: {app: web}", "from: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}", 11, "except",
     ["not inside"]),
    ("from: {app: web}", "from: [{app: web}, webby]", 11, "from", ["from[1]", "'webby'"]),
    ("default: deny", "default: maybe", 16, "default", ["deny or allow"]),
    ("default: deny", """\
  - name: web-to-db
    action: deny
    from: any
    to: any
default: deny""", 16, "name", ["rule 'web-to-db'", "used twice"]),
]


@pytest.mark.parametrize("old,new,line,key,words", BAD, ids=[b[3] + str(b[2]) for b in BAD])
def test_errors_name_file_line_key_and_rule(old, new, line, key, words):
    text = BASE.replace(old, new, 1)
    assert text != BASE
    with pytest.raises(ConfigError) as ei:
        Policy.loads(text, "bad.yaml")
    e = ei.value
    assert (e.file, e.line, e.key) == ("bad.yaml", line, key), str(e)
    for w in words:
        assert w in e.message, e.message
    assert str(e).startswith(f"bad.yaml:{line}: ")


def test_yaml_syntax_error_has_line():
    with pytest.raises(ConfigError) as ei:
        Policy.loads("identities:\n  web: {labels: [\n", "syntax.yaml")
    assert ei.value.file == "syntax.yaml" and ei.value.line


def test_python_errors_name_the_rule_and_key():
    with pytest.raises(ConfigError) as ei:
        Rule("r1", "allow", src={"app": "web"}, dst="any", ports=["tcp/99999"])
    assert "rule 'r1'" in str(ei.value) and ei.value.key == "ports"
    with pytest.raises(ConfigError, match="is not a valid name"):
        Rule("bad name", "allow")
    with pytest.raises(ConfigError, match="identity 'x'.*not an IP"):
        Identity("x", {}, ["ten.0.0.1"])
    with pytest.raises(ConfigError, match="defined twice"):
        Policy([Identity("a"), Identity("a")])


# -- selectors, ports, protocols ----------------------------------------------------------------
def test_selectors():
    p = Policy([Identity("web", {"app": "web", "env": "prod"}, ["10.0.1.0/24"]),
                Identity("db", {"app": "db", "env": "prod"}, ["10.0.2.10"]),
                Identity("dev", {"app": "web", "env": "dev"}, ["10.9.0.0/24"])])
    names = lambda sel: [i.name for i in p.select(sel)]  # noqa: E731
    assert names("any") == names({}) == names(Selector.any()) == ["web", "db", "dev"]
    assert names({"app": "web"}) == ["web", "dev"]
    assert names({"app": "web", "env": "prod"}) == ["web"]
    assert names({"app": "cache"}) == []
    assert names({"cidr": "10.0.0.0/8"}) == []  # CIDR selectors pick addresses, not identities
    # adjacent prefixes are merged
    assert p.addresses({"env": "prod"})[0] == [ipaddress.ip_network("10.0.1.0/24"),
                                                ipaddress.ip_network("10.0.2.10/32")]
    sel = Selector.parse({"cidr": ["10.0.0.0/8", "fd00::/8"], "except": ["10.1.0.0/16"]})
    v4, v6 = p.addresses(sel)
    assert ipaddress.ip_network("10.1.0.0/16") not in v4 and len(v4) == 8
    assert v6 == [ipaddress.ip_network("fd00::/8")]
    assert Selector.parse(sel.to_data()) == sel
    assert str(sel) == "cidr:10.0.0.0/8,fd00::/8 except 10.1.0.0/16"


def test_port_forms_are_equivalent():
    one = [PortSpec.parse({"proto": "tcp", "port": 80}), PortSpec.parse("tcp/80"),
           PortSpec("tcp", 80), PortSpec(6, "80"), PortSpec.parse({"proto": 6, "ports": [80]})]
    assert all(x == one[0] for x in one)
    r = PortSpec.parse({"proto": "udp", "ports": ["1000-2000", 1500, 2001, 53]})
    assert r.ranges == ((53, 53), (1000, 2001)) and str(r) == "udp/53,1000-2001"
    assert PortSpec.parse({"proto": "udp", "ports": "1000-2000"}).ranges == ((1000, 2000),)
    assert PortSpec.parse("any") == PortSpec.parse({"proto": "any"}) == PortSpec(None)
    assert PortSpec.parse({"proto": "icmpv6"}).proto == 58
    assert PortSpec.parse({"proto": 47}).proto == 47
    # an 'any' entry makes the rule cover all traffic
    r = Rule("r", "allow", ports=["tcp/80", "any"])
    assert r.all_traffic and "ports" not in r.to_data()
    for bad in ("tcp/0-", {"proto": "tcp", "port": 1, "ports": 2}, {"port": 80}, 80,
                {"proto": 256}, {"proto": "any", "port": 80}):
        with pytest.raises(ConfigError):
            PortSpec.parse(bad)


# -- semantics ------------------------------------------------------------------------------------
def test_evaluator_on_the_example():
    p = Policy.loads(EXAMPLE)
    assert expected_verdict(p, "10.0.1.5", "10.0.2.10", "tcp", 40000, 5432) == ("allow",
                                                                                 "web-to-db")
    assert expected_verdict(p, "10.0.1.5", "10.0.2.10", "tcp", 40000, 22) == ("deny", "no-ssh")
    # default deny: wrong protocol, wrong port, reverse direction, unknown address
    assert expected_verdict(p, "10.0.1.5", "10.0.2.10", "udp", 1, 5432) == ("deny", None)
    assert expected_verdict(p, "10.0.1.5", "10.0.2.10", 6, 1, 5433) == ("deny", None)
    assert expected_verdict(p, "10.0.2.10", "10.0.1.5", "tcp", 1, 5432) == ("deny", None)
    assert expected_verdict(p, "192.0.2.1", "10.0.2.10", "tcp", 1, 5432) == ("deny", None)
    assert "no rule matches: default deny" in explain(p, "192.0.2.1", "10.0.2.10", "tcp", 1, 80)
    assert "rule 'no-ssh'" in explain(p, "10.0.1.5", "10.0.1.6", "tcp", 1, 22)


def test_explicit_deny_wins_whatever_the_order():
    for order in (1, -1):
        rules = [Rule("allow-all", "allow", "any", "any"),
                 Rule("deny-db", "deny", "any", {"app": "db"}, ["tcp/5432"])][::order]
        p = Policy([Identity("web", {"app": "web"}, ["10.0.1.0/24"]),
                    Identity("db", {"app": "db"}, ["10.0.2.10"])], rules)
        assert expected_verdict(p, "10.0.1.1", "10.0.2.10", "tcp", 0, 5432) == ("deny", "deny-db")
        assert expected_verdict(p, "10.0.1.1", "10.0.2.10", "tcp", 0, 80) == ("allow",
                                                                              "allow-all")


def test_default_allow():
    p = Policy([Identity("a", {}, ["10.0.0.1"])],
               [Rule("no-telnet", "deny", "any", "any", ["tcp/23"])], default="allow")
    assert expected_verdict(p, "192.0.2.1", "198.51.100.1", "udp", 0, 53) == ("allow", None)
    assert expected_verdict(p, "10.0.0.1", "10.0.0.1", "tcp", 0, 23) == ("deny", "no-telnet")
    acl, n_ids = compile_policy(p)
    assert n_ids == 2
    catch = [r for r in acl if r.id == 1]
    assert {(r.family, str(r.src), r.priority, r.action) for r in catch} == {
        (4, "0.0.0.0/0", 1, "allow"), (6, "::/0", 1, "allow")}


def test_ipv6_and_icmp_families():
    p = Policy([Identity("a", {"t": "a"}, ["10.0.1.0/24", "fd00:1::/64"]),
                Identity("b", {"t": "b"}, ["fd00:2::5"])],
               [Rule("ping", "allow", {"t": "a"}, {"t": "b"}, ["icmp", "icmpv6", "tcp/443"])])
    acl, _ = compile_policy(p)
    # b has no IPv4 address: only IPv6 rules; icmp (IPv4) is left out
    assert {(r.family, r.proto) for r in acl} == {(6, 58), (6, 6)}
    assert all(isinstance(r.src, ipaddress.IPv6Network) for r in acl)
    assert expected_verdict(p, "fd00:1::9", "fd00:2::5", "icmpv6") == ("allow", "ping")
    assert expected_verdict(p, "fd00:1::9", "fd00:2::5", "icmp") == ("deny", None)
    assert expected_verdict(p, "fd00:1::9", "fd00:2::5", "tcp", 1, 443) == ("allow", "ping")
    assert expected_verdict(p, "10.0.1.9", "fd00:2::5", "tcp", 1, 443) == ("deny", None)


# -- compile -------------------------------------------------------------------------------------
def test_compile_cross_product_ids_and_priorities():
    p = Policy(
        [Identity("web", {"t": "web"}, ["10.0.1.0/24", "10.0.3.0/24", "fd00:1::/64"]),
         Identity("api", {"t": "api"}, ["10.0.2.1", "10.0.2.7", "10.0.4.0/24", "fd00:2::/64"]),
         Identity("ext", {"t": "ext"}, ["192.0.2.0/24"])],
        [Rule("web-api", "allow", {"t": "web"}, {"t": "api"},
              [{"proto": "tcp", "ports": [80, "8000-8080"]}, "udp/53"]),
         Rule("ext-web", "allow", {"t": "ext"}, {"t": "web"}, ["tcp/443"]),
         Rule("no-ext-api", "deny", {"t": "ext"}, {"t": "api"}),
         Rule("no-web-telnet", "deny", "any", {"t": "web"}, ["tcp/23"])])
    acl, n_ids = compile_policy(p)
    assert n_ids == 4
    by_id: dict[int, list[AclRule]] = {}
    for r in acl:
        by_id.setdefault(r.id, []).append(r)
    # web-api: v4 2 src x 3 dst x 3 entries + v6 1 x 1 x 3
    assert len(by_id[0]) == 2 * 3 * 3 + 1 * 1 * 3
    assert {(r.proto, r.dport) for r in by_id[0]} == {(6, (80, 80)), (6, (8000, 8080)),
                                                       (17, (53, 53))}
    assert all(r.sport == (0, 65535) and r.action == "allow" for r in by_id[0])
    assert {(r.family, str(r.src), str(r.dst)) for r in by_id[0] if r.proto == 17} == {
        (4, "10.0.1.0/24", "10.0.2.1/32"), (4, "10.0.1.0/24", "10.0.2.7/32"),
        (4, "10.0.1.0/24", "10.0.4.0/24"), (4, "10.0.3.0/24", "10.0.2.1/32"),
        (4, "10.0.3.0/24", "10.0.2.7/32"), (4, "10.0.3.0/24", "10.0.4.0/24"),
        (6, "fd00:1::/64", "fd00:2::/64")}
    assert len(by_id[1]) == 2  # ext has no IPv6: v4 only, no v4 x v6 pairs
    assert len(by_id[2]) == 3 and all(r.proto is None and r.dport == (0, 65535)
                                      for r in by_id[2])
    # any -> web: 6 v4 sources (10.0.1/24, 10.0.2.1, 10.0.2.7, 10.0.3/24, 10.0.4/24,
    # 192.0.2/24) x 2 web prefixes, and 2 v6 sources x 1
    assert len(by_id[3]) == 6 * 2 + 2 * 1
    # one priority per policy rule; deny above allow, earlier above later
    prio = {i: {r.priority for r in rs} for i, rs in by_id.items()}
    assert all(len(v) == 1 for v in prio.values())
    prio1 = {i: v.pop() for i, v in prio.items()}
    assert prio1[2] > prio1[3] > prio1[0] > prio1[1] >= 2
    assert {r.action for r in by_id[2] + by_id[3]} == {"deny"}


def _acl_verdict(acl: list[AclRule], src, dst, proto: int, dport: int):
    """What rte_acl would do: the highest-priority matching rule."""
    best = None
    for r in acl:
        if (r.family == src.version == dst.version and src in r.src and dst in r.dst
                and (r.proto is None or r.proto == proto)
                and r.dport[0] <= dport <= r.dport[1]
                and (best is None or r.priority > best.priority)):
            best = r
    return best


def test_compiled_acl_agrees_with_the_evaluator():
    p = Policy.load(FIREWALL_POLICY)
    acl, _ = compile_policy(p)
    rng = random.Random(7)
    hosts = ["10.0.1.5", "10.0.2.9", "10.0.3.10", "10.0.9.3", "10.0.9.77", "198.51.100.20",
             "203.0.113.1", "fd00:1::5", "fd00:2::9", "fd00:3::10", "2001:db8::1", "2001:db9::1"]
    checked = 0
    for _ in range(3000):
        s, d = (ipaddress.ip_address(rng.choice(hosts)) for _ in range(2))
        proto = rng.choice([6, 6, 17, 1, 58, 47])
        dport = rng.choice([22, 80, 443, 5432, 8080, 9999]) if proto in (6, 17) else 0
        action, name = expected_verdict(p, s, d, proto, 1234, dport)
        hit = _acl_verdict(acl, s, d, proto, dport)
        if hit is None:
            assert (action, name) == ("deny", None), explain(p, s, d, proto, 0, dport)
        else:
            assert (hit.action, p.rules[hit.id].name) == (action, name), \
                explain(p, s, d, proto, 0, dport)
        checked += 1
    assert checked == 3000


def test_compile_100k_rules_under_a_second():
    n_src, n_dst, n_ports = 100, 100, 10
    ids = ([Identity(f"a{i}", {"tier": "a"}, [f"10.1.{i}.0/25"]) for i in range(n_src)]
           + [Identity(f"b{i}", {"tier": "b"}, [f"10.2.{i}.128/25"]) for i in range(n_dst)])
    p = Policy(ids, [Rule("a-to-b", "allow", {"tier": "a"}, {"tier": "b"},
                          [f"tcp/{1000 + 2 * k}" for k in range(n_ports)])])
    t0 = time.perf_counter()
    acl, _ = compile_policy(p)
    one_rule = time.perf_counter() - t0
    assert len(acl) == 100_000
    # the same volume spread over 10,000 policy rules of 10 ACL rules each
    many = Policy(ids, [Rule(f"r{i}", "allow" if i % 3 else "deny", {"tier": "a"},
                             {"cidr": f"10.3.{i // 256}.{i % 256}/32"},
                             [f"tcp/{k + 1}" for k in range(n_ports)]) for i in range(10_000)])
    many_src = Policy([Identity("a", {"tier": "a"}, ["10.1.0.0/24"])], many.rules)
    t0 = time.perf_counter()
    acl2, n_ids = compile_policy(many_src)
    spread = time.perf_counter() - t0
    assert len(acl2) == 100_000 and n_ids == 10_000
    print(f"\ncompile 100k ACL rules: {one_rule * 1000:.0f} ms from 1 policy rule, "
          f"{spread * 1000:.0f} ms from 10k policy rules")
    assert one_rule < 1.0 and spread < 1.0


# -- the shipped example ---------------------------------------------------------------------------
def test_firewall_policy_example():
    p = Policy.load(FIREWALL_POLICY)
    assert p.lint() == []
    assert {i.name for i in p.identities} == {"web", "api", "db", "ops"}
    v = lambda *a: expected_verdict(p, *a)  # noqa: E731
    assert v("198.51.100.7", "10.0.1.10", "tcp", 5555, 443) == ("allow", "internet-to-web")
    assert v("2001:db8::7", "fd00:1::10", "tcp", 5555, 80) == ("allow", "internet-to-web")
    assert v("203.0.113.7", "10.0.1.10", "tcp", 5555, 443) == ("deny", None)
    assert v("198.51.100.7", "10.0.1.10", "tcp", 5555, 22) == ("deny", "no-ssh-from-outside")
    assert v("10.0.1.10", "10.0.2.3", "tcp", 5555, 8080) == ("allow", "web-to-api")
    assert v("10.0.2.3", "10.0.3.10", "tcp", 5555, 5432) == ("allow", "api-to-db")
    assert v("10.0.1.10", "10.0.3.10", "tcp", 5555, 5432) == ("deny", "web-never-to-db")
    assert v("10.0.9.2", "10.0.3.10", "tcp", 5555, 22) == ("allow", "ops-ssh-and-ping")
    assert v("10.0.9.2", "10.0.3.10", "icmp") == ("allow", "ops-ssh-and-ping")
    assert v("172.16.0.9", "10.0.2.3", "udp", 1024, 5001) == ("allow", "loadgen-to-api")
    assert v("172.16.0.9", "10.0.2.3", "udp", 1024, 5002) == ("deny", None)
    assert v("10.0.2.3", "10.0.1.10", "tcp", 5555, 80) == ("deny", None)
    acl, n_ids = compile_policy(p)
    assert n_ids == len(p.rules) == 7 and acl


def test_lint_flags_empty_selectors_and_shared_addresses():
    p = Policy([Identity("a", {"x": "1"}, ["10.0.0.0/24"]), Identity("b", {}, ["10.0.0.5"]),
                Identity("c")],
               [Rule("r", "allow", {"x": "2"}, "any")])
    lint = p.lint()
    assert any("'c' has no addresses" in m for m in lint)
    assert any("from selector x=2 matches no identity" in m for m in lint)
    assert any("'a' and 'b' share addresses" in m for m in lint)


def test_collapse_matches_ipaddress():
    """The integer merge gives exactly ipaddress.collapse_addresses' prefixes."""
    import ipaddress
    import random

    from pydp.policy.model import collapse

    rnd = random.Random(3)
    for _ in range(300):
        nets4 = [ipaddress.ip_network((10 << 24 | rnd.getrandbits(10) << rnd.choice((0, 4, 8)),
                                       rnd.choice((22, 24, 28, 30, 31, 32, 32, 32))),
                                      strict=False) for _ in range(rnd.randint(1, 40))]
        nets6 = [ipaddress.ip_network((0xFD << 120 | rnd.getrandbits(8) << rnd.choice((0, 64)),
                                       rnd.choice((56, 64, 120, 127, 128, 128))), strict=False)
                 for _ in range(rnd.randint(0, 20))]
        got4, got6 = collapse(nets4 + nets6)
        assert got4 == list(ipaddress.collapse_addresses(nets4))
        assert got6 == list(ipaddress.collapse_addresses(nets6))
