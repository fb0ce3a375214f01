"""Pipeline drawings: DOT text (rx ports, stages, tx ports, drop sinks), live counts from a
Stats document on the right edges, and rendering through Graphviz `dot`. No EAL needed.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pydp.graphviz
from pydp import pipeline_graph
from pydp.errors import InvalidArgument, NotFound, PydpError
from pydp.pipeline import Pipeline
from pydp.pipeline_graph import cli_graph, render, to_dot
from pydp.stats import Stats

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
FILES = sorted(PIPELINES.glob("*.yaml"))
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz dot is not installed")

_EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;$', re.M)


def edges(dot: str) -> dict[tuple[str, str], str]:
    """(src, dst) -> the edge's label ('' when it has none)."""
    out = {}
    for m in _EDGE.finditer(dot):
        lab = re.search(r'label="((?:[^"\\]|\\.)*)"', m.group(3) or "")
        out[(m.group(1), m.group(2))] = lab.group(1) if lab else ""
    return out


def node_label(dot: str, node: str) -> str:
    m = re.search(rf'^\s*"{re.escape(node)}" \[label="((?:[^"\\]|\\.)*)"', dot, re.M)
    assert m, f"no node {node} in\n{dot}"
    return m.group(1)


def test_there_are_pipelines():
    assert FILES, PIPELINES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dot_has_every_stage_and_port(path):
    pl = Pipeline.load(path)
    dot = to_dot(pl)
    assert dot.startswith(f'digraph "{pl.name}" {{') and dot.rstrip().endswith("}")
    assert "rankdir=LR" in dot
    for s in pl.stages:
        assert f'"stage/{s.name}"' in dot
        assert node_label(dot, f"stage/{s.name}").startswith(f"{s.name}|{s.TYPE}")
    for p in pl.ports:
        assert f'"rx/{p}"' in dot or f'"tx/{p}"' in dot or f'"port/{p}"' in dot, p
    e = edges(dot)
    for port, st in pl.input_map().items():
        assert node_label(dot, f"rx/{port}") == f"{port} (rx)"
        assert (f"rx/{port}", f"stage/{st}") in e
    for s in pl.stages:
        for target in s.edges().values():
            assert (f"stage/{s.name}", f"stage/{target}") in e
    # no counts without stats
    assert not any(re.search(r"\d", lab) for lab in e.values() if lab), e


@needs_dot
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_renders_png_and_svg(path, tmp_path):
    pl = Pipeline.load(path)
    png = render(pl, tmp_path / "g.png")
    assert png == tmp_path / "g.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = render(pl, tmp_path / "g.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for s in pl.stages:
        assert s.name in text
    for p in pl.ports:
        assert p in text
    d = render(pl, tmp_path / "g.dot")
    assert d.read_text() == to_dot(pl)


def test_router_structure():
    pl = Pipeline.load(PIPELINES / "router.yaml")
    dot = to_dot(pl)
    e = edges(dot)
    # no inputs: every port feeds the first stage; next hops go to their ports
    assert e[("rx/p0", "stage/parse")] == "" and e[("rx/p1", "stage/parse")] == ""
    assert e[("stage/parse", "stage/route")] == ""
    assert e[("stage/route", "tx/p0")] == "hostA"
    assert e[("stage/route", "tx/p1")] == "hostB"
    assert ("stage/route", "drop/route") in e and ("stage/parse", "drop/parse") in e
    assert 'tooltip="route drops: not-ip, no-route, ttl-exceeded"' in dot
    # tx ports on the right, rx on the left
    src = re.search(r"\{ rank=source;(.*?)\}", dot, re.S).group(1)
    sink = re.search(r"\{ rank=sink;(.*?)\}", dot, re.S).group(1)
    assert '"rx/p0"' in src and '"rx/p1"' in src and '"tx/' not in src
    assert '"tx/p0"' in sink and '"tx/p1"' in sink and '"rx/' not in sink


def test_edge_names_mirror_and_drop_sinks():
    pl = Pipeline.loads("""
name: t
ports: [a, b, c, d]
inputs: {a: p, b: p}
stages:
  - {name: p, type: parse, next: m, ipv4: m, arp: d0}
  - {name: m, type: mirror, port: c, next: f}
  - {name: f, type: forward, port: b}
  - {name: d0, type: drop}
  - {name: n, type: count, next: f}
""")
    dot = to_dot(pl)
    e = edges(dot)
    assert e[("stage/p", "stage/m")] == "next, ipv4"  # edges to one stage are merged
    assert e[("stage/p", "stage/d0")] == "arp"
    assert e[("stage/m", "stage/f")] == ""
    assert e[("stage/m", "tx/c")] == "copy"
    assert re.search(r'"stage/m" -> "tx/c" \[.*style="dashed"', dot)
    assert not re.search(r'"stage/f" -> "tx/b" \[.*dashed', dot)
    # drop sinks only for types that count drop reasons (count and mirror do not)
    assert {d for s, d in e if d.startswith("drop/")} == {"drop/p", "drop/d0", "drop/f"}
    assert node_label(dot, "port/d") == "d (unused)"


def _router_stats() -> dict:
    c = {"port/p0/rx_packets": 60, "port/p1/rx_packets": 40,
         "port/p0/tx_packets": 50, "port/p1/tx_packets": 30,
         "port/p0/drop/tx_full": 0, "port/p1/drop/tx_full": 7,
         "stage/parse/in": 100, "stage/parse/drop/truncated-ip": 3,
         "stage/parse/drop/bad-ipv4-checksum": 0,
         "stage/route/in": 97, "stage/route/drop/no-route": 5,
         "stage/route/drop/ttl-exceeded": 2, "stage/route/drop/not-ip": 0}
    return Stats(c, elapsed=1.0, memory="no-huge").to_dict()


def test_live_counts_on_the_right_edges():
    pl = Pipeline.load(PIPELINES / "router.yaml")
    dot = to_dot(pl, _router_stats())
    e = edges(dot)
    assert e[("rx/p0", "stage/parse")] == "60"
    assert e[("rx/p1", "stage/parse")] == "40"
    # parse has two predecessors: its in count goes into the node
    assert node_label(dot, "stage/parse") == "parse|parse|in 100"
    # route has one (parse): its in count is on that edge
    assert e[("stage/parse", "stage/route")] == "97"
    assert node_label(dot, "stage/route") == "route|l3route"
    assert e[("stage/route", "tx/p0")] == "hostA\\n50"
    assert e[("stage/route", "tx/p1")] == "hostB\\n30"
    # only the non-zero drop reasons
    assert e[("stage/parse", "drop/parse")] == "truncated-ip 3"
    assert e[("stage/route", "drop/route")] == "no-route 5\\nttl-exceeded 2"
    assert node_label(dot, "tx/p1") == "p1 (tx)\\ndrop tx_full 7"
    assert node_label(dot, "tx/p0") == "p0 (tx)"
    assert "rx 100  tx 80  dropped 17" in dot


def test_live_counts_single_port_input_and_shared_tx_port():
    pl = Pipeline.loads("""
name: t
ports: [a, b]
inputs: {a: p}
stages:
  - {name: p, type: parse, next: f, arp: g}
  - {name: f, type: forward, port: b}
  - {name: g, type: forward, port: b}
""")
    st = Stats({"port/a/rx_packets": 1200, "port/b/tx_packets": 1100, "stage/p/in": 1200,
                "stage/f/in": 1000, "stage/g/in": 100, "stage/f/drop/no-port": 0,
                "stage/g/drop/no-port": 0, "stage/p/drop/truncated-l4": 100}).to_dict()
    dot = to_dot(pl, st)
    e = edges(dot)
    assert e[("rx/a", "stage/p")] == "1,200"
    assert node_label(dot, "stage/p") == "p|parse|in 1,200"  # fed by a port, not a stage
    assert e[("stage/p", "stage/f")] == "1,000"
    assert e[("stage/p", "stage/g")] == "arp\\n100"
    # two edges into b (tx): the count goes into the port's box, not on either edge
    assert e[("stage/f", "tx/b")] == "" and e[("stage/g", "tx/b")] == ""
    assert node_label(dot, "tx/b") == "b (tx)\\ntx 1,100"
    assert e[("stage/f", "drop/f")] == ""  # zero drops: no label
    assert e[("stage/p", "drop/p")] == "truncated-l4 100"


def test_missing_counters_are_zero_and_empty_stats():
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    e = edges(to_dot(pl, {}))
    assert e[("rx/in", "stage/parse")] == "0"
    assert e[("stage/parse", "stage/fwd")] == "0"
    assert e[("stage/fwd", "tx/out")] == "0"


@needs_dot
def test_quoting(tmp_path):
    desc = 'say "hi" \\ {x|y} <z>\nline two'
    pl = Pipeline("q", ports=["in", "out"], inputs={"in": "parse"},
                  stages=Pipeline.load(PIPELINES / "forward.yaml").stages, description=desc)
    dot = to_dot(pl)
    assert 'say \\"hi\\" \\\\ {x|y} <z>\\nline two' in dot
    svg = render(pl, tmp_path / "q.svg")
    text = [t.text for t in ET.parse(svg).getroot().iter() if t.tag.endswith("text")]
    assert 'say "hi" \\ {x|y} <z>' in text and "line two" in text
    assert pipeline_graph._rec("a|b", "{c}") == '"a\\|b|\\{c\\}"'


def test_bad_extension(tmp_path):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    with pytest.raises(InvalidArgument, match=r"g\.pdf.*\.dot, \.png, \.svg"):
        render(pl, tmp_path / "g.pdf")
    with pytest.raises(InvalidArgument):
        render(pl, tmp_path / "noext")
    assert not (tmp_path / "g.pdf").exists()


def test_missing_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(pydp.graphviz.shutil, "which", lambda name: None)
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    with pytest.raises(NotFound, match="Graphviz 'dot' is not installed") as ei:
        render(pl, tmp_path / "g.png")
    assert isinstance(ei.value, PydpError)
    # .dot needs no Graphviz
    assert render(pl, tmp_path / "g.dot").read_text().startswith("digraph")


@needs_dot
def test_cli_graph(tmp_path, monkeypatch):
    calls = []

    def fake_call(cmd, path=None, **args):
        calls.append((cmd, path))
        return _router_stats()

    import pydp.control
    monkeypatch.setattr(pydp.control, "call", fake_call)
    out = tmp_path / "r.svg"
    msg = cli_graph(str(PIPELINES / "router.yaml"), str(out), "/run/x.sock")
    assert calls == [("stats", "/run/x.sock")]
    assert msg.startswith(f"wrote {out} (pipeline router") and "/run/x.sock" in msg
    assert "warning" not in msg
    text = [t.text for t in ET.parse(out).getroot().iter() if t.tag.endswith("text")]
    assert "97" in text and "no-route 5" in text

    msg = cli_graph(str(PIPELINES / "forward.yaml"), str(tmp_path / "f.dot"), "/run/x.sock")
    assert "warning: the dataplane has stages not in this file: route" in msg
    calls.clear()
    msg = cli_graph(str(PIPELINES / "forward.yaml"), str(tmp_path / "f.dot"), None)
    assert calls == [] and "live" not in msg
    assert (tmp_path / "f.dot").read_text() == to_dot(Pipeline.load(PIPELINES / "forward.yaml"))
