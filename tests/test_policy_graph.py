"""Policy drawings: DOT text (identities as nodes, allowed reach as labelled edges, deny
rules as dashed red edges) and rendering through Graphviz `dot` when it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import pydp.graphviz
from pydp.errors import NotFound
from pydp.policy.graph import render, to_dot
from pydp.policy.model import Policy

FIREWALL_POLICY = (Path(__file__).resolve().parent.parent / "pipelines" / "policies"
                   / "firewall.yaml")
HAVE_DOT = shutil.which("dot") is not None


def edges(dot: str) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for m in re.finditer(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', dot, re.M):
        out.setdefault((m.group(1), m.group(2)), []).append(m.group(3))
    return out


def test_dot_nodes_and_edges():
    p = Policy.load(FIREWALL_POLICY)
    dot = to_dot(p)
    assert dot.startswith("digraph policy {") and dot.rstrip().endswith("}")
    assert 'label="policy firewall-policy (default deny)"' in dot
    # identities as nodes with their labels and addresses
    assert '"web" [label="web\\nenv=prod, tier=web\\n10.0.1.0/24\\nfd00:1::/64"];' in dot
    assert '"ops" [label="ops\\nrole=ops\\n10.0.9.0/28"];' in dot
    # the external CIDR is a note
    assert re.search(r'"cidr:198\.51\.100\.0/24,2001:db8::/32" \[shape=note', dot)
    e = edges(dot)
    assert e[("web", "api")] == ['label="tcp/8080", color="#1a7f37", fontcolor="#1a7f37"']
    assert 'label="tcp/5432"' in e[("api", "db")][0]
    assert 'label="icmp tcp/22"' in e[("ops", "db")][0]
    assert 'label="tcp/80,443"' in e[("cidr:198.51.100.0/24,2001:db8::/32", "web")][0]
    # deny rules: dashed red, labelled with ports and rule names; no allowed edge web -> db
    (deny,) = e[("web", "db")]
    assert "style=dashed" in deny and "color=red" in deny
    assert 'label="deny any\\n(web-never-to-db)"' in deny
    outside = "cidr:0.0.0.0/0,::/0 except 10.0.0.0/16,fd00::/16"
    for dst in ("web", "api", "db", "ops"):
        (deny,) = e[(outside, dst)]
        assert 'label="deny tcp/22\\n(no-ssh-from-outside)", style=dashed' in deny
    assert ("db", "web") not in e and ("api", "web") not in e


def test_dot_partial_reach_and_escaping():
    p = Policy.loads("""\
name: odd "quoted"
identities:
  a: {labels: {x: "1"}, addresses: [10.0.0.0/24]}
  b: {labels: {x: "2"}, addresses: [10.1.0.1]}
rules:
  - {name: half, action: allow, from: {cidr: 10.0.0.0/25}, to: {x: "2"}, ports: [udp/53]}
""")
    dot = to_dot(p)
    assert 'label="policy odd \\"quoted\\" (default deny)"' in dot
    e = edges(dot)
    # the /25 lies inside `a`: a -> b is allowed for some of a's addresses only
    assert e[("a", "b")] == ['label="udp/53 (partial)", color="#1a7f37", fontcolor="#1a7f37"']
    assert "cidr:10.0.0.0/25" not in dot


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz dot is not installed")
def test_dot_text_is_valid_graphviz(tmp_path):
    r = subprocess.run(["dot", "-Tsvg"], input=to_dot(Policy.load(FIREWALL_POLICY)),
                       text=True, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "<svg" in r.stdout and "web&#45;never&#45;to&#45;db" in r.stdout


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz dot is not installed")
def test_render_png_and_svg(tmp_path):
    p = Policy.load(FIREWALL_POLICY)
    png = render(p, tmp_path / "fw.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = render(p, tmp_path / "fw.svg")
    assert "<svg" in svg.read_text()


def test_render_dot_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(pydp.graphviz.shutil, "which", lambda name: None)
    p = Policy.load(FIREWALL_POLICY)
    out = render(p, tmp_path / "fw.dot")
    assert out.read_text() == to_dot(p)


def test_render_without_dot_names_the_tool(tmp_path, monkeypatch):
    monkeypatch.setattr(pydp.graphviz.shutil, "which", lambda name: None)
    with pytest.raises(NotFound, match=r"Graphviz 'dot' is not installed.*graphviz"):
        render(Policy.load(FIREWALL_POLICY), tmp_path / "fw.png")


def test_render_refuses_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="'bmp' is not one of png, svg, pdf, dot"):
        render(Policy.load(FIREWALL_POLICY), tmp_path / "fw.bmp")
