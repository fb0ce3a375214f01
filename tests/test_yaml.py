"""Pipeline files: the shipped ones load, validate and round-trip; a broken file's
error names the file, the line and the key; the Python API and YAML build equal
pipelines. Nothing here opens a port.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pydp import ConfigError, Pipeline
from pydp.stages import Count, Drop, Forward, L3Route, Mirror, NextHop, Parse, Route

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
SHIPPED = sorted(PIPELINES.glob("*.yaml"))


# -- shipped files ---------------------------------------------------------------------------
def test_there_are_shipped_pipelines():
    assert {p.name for p in SHIPPED} >= {"forward.yaml", "router.yaml", "l2bridge.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_pipeline_loads_validates_and_round_trips(path):
    pl = Pipeline.load(path)
    assert pl.source == str(path)
    assert pl.name == path.stem
    pl.validate()
    assert pl.order()  # acyclic
    assert pl.describe().startswith(f"pipeline {pl.name}:")
    text = pl.to_yaml()
    back = Pipeline.loads(text, "roundtrip.yaml")
    assert back == pl
    assert back.to_yaml() == text  # a fixed point
    # the file and the dump hold the same data (comments and layout aside)
    assert yaml.safe_load(text) == yaml.safe_load(path.read_text())


def test_python_api_equals_yaml_forward():
    py = Pipeline("forward", ports=["in", "out"], inputs={"in": "parse"},
                  description="Parse every packet from `in` and forward it out of `out` "
                              "with MAC rewrite.",
                  stages=[Parse("parse", next="fwd"),
                          Forward("fwd", port="out", dst_mac="02:00:00:00:00:02")])
    assert py == Pipeline.load(PIPELINES / "forward.yaml")


def test_python_api_equals_yaml_router():
    py = Pipeline("router", ports=["p0", "p1"],
                  description="Route between two subnets on ports p0 and p1 (IPv4 and IPv6).",
                  stages=[Parse("parse", next="route"),
                          L3Route("route",
                                  nexthops=[NextHop("hostA", "p0", "02:00:00:00:00:0a"),
                                            NextHop("hostB", "p1", "02:00:00:00:00:0b")],
                                  routes=[Route("10.0.1.0/24", "hostA"),
                                          Route("10.0.2.0/24", "hostB"),
                                          Route("fd00:1::/64", "hostA"),
                                          Route("fd00:2::/64", "hostB")])])
    yml = Pipeline.load(PIPELINES / "router.yaml")
    assert py == yml
    # next hops and routes given as mappings build the same stage
    assert L3Route("route", nexthops=[{"name": "hostA", "port": "p0",
                                       "dst_mac": "02:00:00:00:00:0a"}],
                   routes=[{"prefix": "10.0.1.0/24", "via": "hostA"}]) == \
        L3Route("route", nexthops=[NextHop("hostA", "p0", "02:00:00:00:00:0a")],
                routes=[Route("10.0.1.0/24", "hostA")])


def test_python_api_equals_yaml_l2bridge():
    py = Pipeline("l2bridge", ports=["a", "b"], inputs={"a": "parse_a", "b": "parse_b"},
                  description="Parse and forward in both directions between ports a and b, "
                              "MAC addresses untouched.",
                  stages=[Parse("parse_a", next="to_b"),
                          Forward("to_b", port="b", keep_src_mac=True),
                          Parse("parse_b", next="to_a"),
                          Forward("to_a", port="a", keep_src_mac=True)])
    assert py == Pipeline.load(PIPELINES / "l2bridge.yaml")


def test_every_stage_type_round_trips():
    """Non-default settings of every stage type survive to_yaml -> loads, including
    values YAML 1.1 would read as something else unquoted (on/off, null, a MAC of
    digits that looks like a base-60 integer)."""
    py = Pipeline("all", ports=["on", "off", "null"], inputs={"on": "parse"},
                  description="every: stage type\nsecond line",
                  stages=[Parse("parse", next="cnt", ipv4="mir", ipv6="route", arp="drop",
                                other="drop", verify_checksum=False),
                          Mirror("mir", port="null", next="cnt"),
                          Count("cnt", next="fwd"),
                          Forward("fwd", port="off", src_mac="12:34:56:00:00:01",
                                  dst_mac="10:20:30:40:50:59"),
                          L3Route("route",
                                  nexthops=[NextHop("h", "on", "02:00:00:00:00:0a",
                                                    src_mac="12:00:00:00:00:00")],
                                  routes=[Route("10.0.0.0/8", "h"), Route("fd00::/16", "h")]),
                          Drop("drop")])
    back = Pipeline.loads(py.to_yaml())
    assert back == py
    assert back.stage("parse").verify_checksum is False
    assert back.stage("fwd").dst_mac == "10:20:30:40:50:59"
    assert back.ports == ["on", "off", "null"]


def test_api_and_yaml_raise_the_same_error():
    text = "name: t\nports: [a]\nstages:\n  - {name: p, type: parse, next: nowhere}\n"
    with pytest.raises(ConfigError) as yml:
        Pipeline.loads(text, "t.yaml")
    with pytest.raises(ConfigError) as api:
        Pipeline("t", ports=["a"], stages=[Parse("p", next="nowhere")])
    assert api.value.key == yml.value.key == "next"
    assert api.value.file is None
    assert str(yml.value) == f"t.yaml:4: {api.value}"


# -- errors: file, line, key -----------------------------------------------------------------
BASE = """\
# a comment line
name: t
ports: [in, out]
stages:
  - name: parse
    type: parse
    next: fwd
  - name: fwd
    type: forward
    port: out
"""

ROUTER = """\
name: r
ports: [in, out]
stages:
  - name: parse
    type: parse
    next: route
  - name: route
    type: l3route
    nexthops:
      - {name: a, port: out, dst_mac: "02:00:00:00:00:01"}
      - name: b
        port: out
        dst_mac: "02:00:00:00:00:02"
    routes:
      - {prefix: 10.0.0.0/8, via: a}
      - prefix: 10.1.0.0/16
        via: b
"""

LOOP = """\
name: t
ports: [in, out]
stages:
  - {name: parse, type: parse, next: a}
  - {name: a, type: count, next: b}
  - {name: b, type: count, next: c}
  - {name: c, type: count, next: a}
"""

NO_PARSE = """\
name: t
ports: [in, out]
inputs: {in: cnt}
stages:
  - {name: parse, type: parse, next: cnt}
  - {name: cnt, type: count, next: route}
  - name: route
    type: l3route
    nexthops: [{name: a, port: out, dst_mac: "02:00:00:00:00:01"}]
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln]
    assert len(hits) >= nth, f"{needle!r} not in the test text"
    return hits[nth - 1]


def load_error(tmp_path: Path, text: str, name: str = "bad.yaml") -> tuple[ConfigError, Path]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as ei:
        Pipeline.load(path)
    return ei.value, path


# (id, text, (needle, nth) of the line the error must name, key, message pattern)
ERRORS = [
    ("unknown-top-level-key", BASE + "colour: red\n", ("colour", 1), "colour",
     r"unknown key 'colour' \(allowed: name, description, ports, inputs, stages\)"),
    ("unknown-stage-key", BASE + "    colour: red\n", ("colour", 1), "colour",
     r"stage type 'forward' has no key 'colour'"),
    ("unknown-stage-type", BASE.replace("type: forward", "type: teleport"),
     ("teleport", 1), "type", r"unknown stage type 'teleport' \(known: parse, forward"),
    ("stage-missing-name", BASE.replace("  - name: fwd\n    type: forward",
                                        "  - type: forward"),
     ("type: forward", 1), "name", r"stage needs a 'name'"),
    ("stage-missing-type", BASE.replace("    type: forward\n", ""), ("name: fwd", 1), "type",
     r"stage 'fwd' needs a 'type'"),
    ("bad-mac", BASE + '    dst_mac: "02:00:00:00:00"\n', ("dst_mac", 1), "dst_mac",
     r"dst_mac: '02:00:00:00:00' is not a MAC address"),
    ("bad-mac-hex", BASE + '    src_mac: "02:00:00:00:00:zz"\n', ("src_mac", 1), "src_mac",
     r"src_mac: '02:00:00:00:00:zz' is not a MAC address"),
    ("next-to-missing-stage", BASE.replace("next: fwd", "next: nowhere"), ("nowhere", 1),
     "next", r"stage 'parse': next: no stage named 'nowhere'"),
    ("edge-to-missing-stage", BASE.replace("next: fwd", "next: fwd\n    ipv6: v6"),
     ("ipv6: v6", 1), "ipv6", r"stage 'parse': ipv6: no stage named 'v6'"),
    ("next-to-itself", BASE.replace("next: fwd", "next: parse"), ("next: parse", 1), "next",
     r"stage 'parse': next points to itself"),
    ("loop", LOOP, ("stages:", 1), "stages",
     r"the stages a, b, c form a loop; a pipeline must be acyclic"),
    ("port-not-in-ports", BASE.replace("port: out", "port: elsewhere"), ("elsewhere", 1),
     "port", r"stage 'fwd': port: no port named 'elsewhere' \(ports: in, out\)"),
    ("mirror-port-not-in-ports", BASE.replace("next: fwd", "next: m") +
     "  - {name: m, type: mirror, port: tap, next: fwd}\n", ("name: m,", 1), "port",
     r"stage 'm': port: no port named 'tap'"),
    ("inputs-port-not-in-ports", BASE + "inputs: {nope: parse}\n", ("inputs:", 1), "inputs",
     r"inputs: no port named 'nope'"),
    ("inputs-to-missing-stage", BASE + "inputs: {in: nope}\n", ("inputs:", 1), "inputs",
     r"inputs: in: no stage named 'nope'"),
    ("nexthop-port-not-in-ports", ROUTER.replace("port: out\n", "port: elsewhere\n"),
     ("port: elsewhere", 1), "port",
     r"stage 'route': next hop 'b': port: no port named 'elsewhere'"),
    ("route-via-missing-nexthop", ROUTER.replace("via: b", "via: c"), ("via: c", 1), "via",
     r"stage 'route': route 10.1.0.0/16: via: no next hop named 'c'"),
    ("verify-checksum-not-bool", BASE.replace("next: fwd", "next: fwd\n    verify_checksum: 2"),
     ("verify_checksum", 1), "verify_checksum", r"verify_checksum must be true or false"),
    ("src-mac-and-keep-src-mac", BASE + '    src_mac: "02:00:00:00:00:01"\n'
     "    keep_src_mac: true\n", ("keep_src_mac", 1), "keep_src_mac",
     r"src_mac and keep_src_mac exclude each other"),
    ("bad-stage-name", BASE.replace("name: fwd", "name: 'f w d'").replace("next: fwd",
                                                                          "next: 'f w d'"),
     ("f w d", 2), "name", r"name: 'f w d' is not a valid name"),
    ("missing-stages", "name: t\nports: [in]\n", ("name: t", 1), None,
     r"missing key 'stages'"),
    ("missing-ports", "name: t\nstages: []\n", ("name: t", 1), None, r"missing key 'ports'"),
    ("ports-not-a-list", "name: t\nports: in\nstages: []\n", ("ports:", 1), "ports",
     r"ports must be a list of names"),
    ("no-stages", "name: t\nports: [in]\nstages: []\n", ("stages:", 1), "stages",
     r"needs at least one stage"),
    ("l3route-without-parse-upstream", NO_PARSE, ("stages:", 1), "stages",
     r"stage 'route' \(l3route\) reads packet headers but packets from port 'in' can "
     r"reach it without a parse stage"),
    ("yaml-syntax-error", BASE.replace("next: fwd", "next: fwd: x"), ("fwd: x", 1), None,
     r"YAML syntax: mapping values are not allowed here"),
    ("yaml-tab-indent", BASE.replace("    type: parse", "\ttype: parse"), ("\ttype", 1), None,
     r"YAML syntax: found character '\\t'"),
    ("yaml-two-documents", BASE + "---\nname: u\n", ("---", 1), None, r"YAML syntax:"),
    ("not-a-mapping", "- a\n- b\n", ("- a", 1), None,
     r"a pipeline file must be a mapping with name, ports and stages"),
    ("duplicate-yaml-key", BASE + "    port: in\n", ("port: in", 1), "port",
     r"duplicate key 'port'"),
    ("duplicate-top-level-key", BASE + "name: u\n", ("name: u", 1), "name",
     r"duplicate key 'name'"),
    ("non-string-key", BASE + "1: x\n", ("1: x", 1), None, r"key 1 is not a string"),
]


@pytest.mark.parametrize("text, where, key, pattern",
                         [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_error_names_file_line_and_key(tmp_path, text, where, key, pattern):
    e, path = load_error(tmp_path, text)
    line = line_of(text, *where)
    assert (e.file, e.line, e.key) == (str(path), line, key), str(e)
    assert str(e).startswith(f"{path}:{line}: "), str(e)
    assert re.search(pattern, str(e)), str(e)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"],
                         ids=["empty", "newline", "comment-only", "bare-document-marker"])
def test_empty_file(tmp_path, text):
    e, path = load_error(tmp_path, text)
    assert e.file == str(path)
    assert str(e).startswith(f"{path}:")
    assert "must be a mapping" in str(e)


@pytest.mark.parametrize("text", ["hello\n", "42\n", "[a, b]\n"], ids=["string", "int", "list"])
def test_non_mapping_file(tmp_path, text):
    e, path = load_error(tmp_path, text)
    assert e.file == str(path) and str(e).startswith(f"{path}:")
    assert "must be a mapping with name, ports and stages" in str(e)


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as ei:
        Pipeline.load(missing)
    assert ei.value.file == str(missing)
    assert str(ei.value).startswith(f"{missing}: cannot read")


def test_errors_are_value_errors_with_errno():
    with pytest.raises(ValueError) as ei:
        Pipeline.loads("name: t\n", "x.yaml")
    assert isinstance(ei.value, ConfigError) and ei.value.errno == 22


# -- errors whose line or key is not precise yet (known bugs) ----------------------------------
def test_duplicate_stage_name_points_at_the_duplicate(tmp_path):
    text = BASE + "  - name: fwd\n    type: drop\n"
    e, path = load_error(tmp_path, text)
    assert re.search(r"stage name 'fwd' is used twice", str(e))
    assert e.line == line_of(text, "name: fwd", 2), str(e)


def test_duplicate_stage_name_is_refused(tmp_path):
    """The file and the duplicated name are named."""
    e, path = load_error(tmp_path, BASE + "  - name: fwd\n    type: drop\n")
    assert str(e).startswith(f"{path}:") and e.key == "name"
    assert "stage name 'fwd' is used twice" in str(e)


def test_yaml_syntax_error_at_end_of_file(tmp_path):
    """An unclosed bracket on the last line: PyYAML notices at the end of the stream."""
    text = BASE + "  - name: [oops\n"
    e, path = load_error(tmp_path, text)
    assert e.file == str(path) and e.line in (line_of(text, "[oops"), len(text.splitlines()) + 1)
    assert "YAML syntax:" in str(e)


def test_stage_not_a_mapping_is_refused(tmp_path):
    """The file, a line in the stage list, the message."""
    text = BASE + "  - just a string\n"
    e, path = load_error(tmp_path, text)
    assert e.file == str(path) and line_of(text, "name: parse") <= e.line <= len(text)
    assert "a stage must be a mapping with 'name' and 'type'" in str(e)


def test_stage_not_a_mapping_points_at_the_item(tmp_path):
    text = BASE + "  - just a string\n"
    e, path = load_error(tmp_path, text)
    assert e.line == line_of(text, "just a string"), str(e)


NESTED = [  # errors inside an l3route's nexthops / routes items: (id, text, needle, key, pattern)
    ("bad-prefix", ROUTER.replace("10.1.0.0/16", "10.1.0.0/33"), "10.1.0.0/33", "prefix",
     r"stage 'route': route prefix '10.1.0.0/33'"),
    ("bad-prefix-garbage", ROUTER.replace("10.1.0.0/16", "banana"), "banana", "prefix",
     r"stage 'route': route prefix 'banana'"),
    ("nexthop-bad-mac", ROUTER.replace('"02:00:00:00:00:02"', '"zz:00:00:00:00:02"'),
     "zz:00", "dst_mac", r"dst_mac: 'zz:00:00:00:00:02' is not a MAC address"),
    ("nexthop-unknown-key", ROUTER.replace("        port: out\n",
                                           "        port: out\n        colour: red\n"),
     "colour", "colour", r"stage 'route': nexthops\[1\] has no key 'colour'"),
]


@pytest.mark.parametrize("text, needle, key, pattern", [c[1:] for c in NESTED],
                         ids=[c[0] for c in NESTED])
def test_nested_l3route_error_names_item_line_and_key(tmp_path, text, needle, key, pattern):
    e, path = load_error(tmp_path, text)
    assert (e.line, e.key) == (line_of(text, needle), key), str(e)
    assert "stage 'route'" in str(e), str(e)
