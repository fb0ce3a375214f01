"""pydp policy apply|diff|show|stats against a running dataplane; import-k8s; graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import PIPELINES, ROOT

K8S = ROOT / "tests" / "data" / "k8s"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pydp.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def firewall(tmp_path):
    """pipelines/firewall.yaml running, fed by the template source (UDP 10.0.0.x -> 10.0.1.x)."""
    sock = str(tmp_path / "fw.sock")
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", "pipelines/firewall.yaml",
                          "--port", "in=net_null0", "--port", "out=net_null1,no-rx=1",
                          "--generate", "in", "--rate", "20000", "--control", sock,
                          "--duration", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.1)
    yield sock
    p.send_signal(2)
    p.communicate(timeout=30)
    assert p.returncode == 0


def policy_stats(sock: str) -> dict:
    r = cli("policy", "stats", "--control", sock, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_apply_diff_show_stats_live(firewall, tmp_path):
    sock = firewall
    time.sleep(0.5)
    before = policy_stats(sock)
    assert before["drops"]["default-deny"] > 0  # the demo traffic is not allowed
    allow = tmp_path / "allow.yaml"
    allow.write_text(
        "identities:\n  lab: {labels: {zone: lab}, addresses: [10.0.0.0/16, 'fd00::/16']}\n"
        "rules:\n  - {name: lab-udp, action: allow, from: {zone: lab}, to: {zone: lab},"
        " ports: [{proto: udp}]}\n  - {name: lab-tcp, action: allow, from: {zone: lab},"
        " to: {zone: lab}, ports: [{proto: tcp}]}\n")
    d = cli("policy", "diff", str(allow), "--control", sock)
    assert d.returncode == 0, d.stderr
    assert "lab-udp" in d.stdout and "internet-to-web" in d.stdout  # added and removed
    a = cli("policy", "apply", str(allow), "--control", sock, "--json")
    assert a.returncode == 0, a.stderr
    res = json.loads(a.stdout)
    assert res["rules"] == 2 and res["seconds"] < 5
    time.sleep(0.7)
    st = policy_stats(sock)
    hits = {r["rule"]: r["packets"] for r in st["rules"]}
    assert hits["lab-udp"] > 0 and hits["lab-tcp"] > 0  # UDP and TCP demo flows now pass
    assert "lab-udp" in cli("policy", "show", "--control", sock).stdout


def test_bad_policy_rejected_old_one_stays(firewall, tmp_path):
    sock = firewall
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: x, action: allow, from: any, to: any,\n"
                   "     ports: [{proto: tpc}]}\n")
    r = cli("policy", "apply", str(bad), "--control", sock)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bad.yaml:" in r.stderr and "rule 'x'" in r.stderr and "tpc" in r.stderr
    show = cli("policy", "show", "--control", sock).stdout
    assert "internet-to-web" in show  # the shipped policy is still the live one


def test_import_k8s_cli(tmp_path):
    out = tmp_path / "k8s.yaml"
    r = cli("policy", "import-k8s", str(K8S / "networkpolicy.yaml"), "--inventory",
            str(K8S / "inventory.yaml"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "rules" in out.read_text()
    r = cli("check", "pipelines/firewall.yaml")
    assert r.returncode == 0


def test_import_k8s_reports_unsupported_fields():
    r = cli("policy", "import-k8s", str(K8S / "unsupported.yaml"), "--inventory",
            str(K8S / "inventory.yaml"))
    assert r.returncode == 0, r.stderr
    assert "pydp: unsupported:" in r.stderr


def test_graph_cli(tmp_path):
    out = tmp_path / "g.dot"
    r = cli("policy", "graph", str(PIPELINES / "policies" / "firewall.yaml"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith(("digraph", "strict digraph"))
    if shutil.which("dot"):
        png = tmp_path / "g.png"
        assert cli("policy", "graph", str(PIPELINES / "policies" / "firewall.yaml"),
                   "-o", str(png)).returncode == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flows_cli_after_allowing(firewall, tmp_path):
    sock = firewall
    allow = tmp_path / "allow.yaml"
    allow.write_text("identities:\n  lab: {labels: {zone: lab}, addresses: [10.0.0.0/16]}\n"
                     "rules:\n  - {name: lab-udp, action: allow, from: {zone: lab},"
                     " to: {zone: lab}, ports: [{proto: udp}]}\n")
    assert cli("policy", "apply", str(allow), "--control", sock).returncode == 0
    time.sleep(0.7)
    r = cli("flows", "--control", sock, "--json", "--state", "new", "--port", "80")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["total"] > 0 and doc["flows"]
    assert all(f["proto"] == 17 and 80 in (f["sport"], f["dport"]) for f in doc["flows"])
    assert all(f["src"].startswith("10.0.") for f in doc["flows"])
    r = cli("flows", "--control", sock, "--state", "bogus")
    assert r.returncode == 2 and "state" in r.stderr
