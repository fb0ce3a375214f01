"""``pydp tunnel``: the CA commands, two handshake-only nodes, show/deny over the socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from tunnel_util import free_udp_port

PYDP = [sys.executable, "-m", "pydp.cli"]


def pydp(*args: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(PYDP + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def one_clear_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pydp: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_ca_init_issue_revoke(tmp_path):
    ca = tmp_path / "ca"
    r = pydp("tunnel", "ca", "init", str(ca))
    assert r.returncode == 0, r.stderr
    assert "spiffe://mesh.local" in r.stdout
    r = pydp("tunnel", "ca", "issue", str(ca), "n1", "--out", str(tmp_path / "n1"))
    assert r.returncode == 0, r.stderr
    assert "issued spiffe://mesh.local/node/n1 serial" in r.stdout
    assert stat.S_IMODE(os.stat(tmp_path / "n1" / "n1.key").st_mode) == 0o600
    serial = r.stdout.split("serial ")[1].split()[0]
    r = pydp("tunnel", "ca", "revoke", str(ca), "n1")
    assert r.returncode == 0 and f"revoked n1: serial {serial}" in r.stdout
    r = pydp("tunnel", "ca", "revoke", str(ca), "--serial", serial)
    assert r.returncode == 0 and "already revoked" in r.stdout
    r = pydp("tunnel", "ca", "list", str(ca))
    assert r.returncode == 0 and r.stdout.startswith("n1") and "REVOKED" in r.stdout
    assert serial in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["tunnel", "ca", "issue", "/nonexistent/ca", "n1"], "not a mesh CA directory"),
    (["tunnel", "ca", "init", "{ca}", "--trust-domain", "Bad Domain"], "trust domain"),
    (["tunnel", "ca", "issue", "{ca}", "Bad/Node"], "node 'Bad/Node': a node id is"),
    (["tunnel", "ca", "issue", "{ca}", "n1", "--days", "0"], "--days 0: must be positive"),
    (["tunnel", "ca", "revoke", "{ca}", "n7"], "node n7: this CA issued it no certificate"),
    (["tunnel", "ca", "revoke", "{ca}"], "give a node or --serial"),
    (["tunnel", "ca", "init", "{ca}"], "a CA already exists there"),
    (["tunnel", "show", "--control", "/nonexistent/x.sock"], "no running dataplane"),
])
def test_cli_errors_are_one_line(tmp_path, args, msg):
    ca = tmp_path / "ca"
    assert pydp("tunnel", "ca", "init", str(ca)).returncode == 0
    line = one_clear_line(pydp(*[a.replace("{ca}", str(ca)) for a in args]))
    assert msg in line, line


def _setup(tmp_path: Path) -> tuple[Path, Path, int, int]:
    ca = tmp_path / "ca"
    assert pydp("tunnel", "ca", "init", str(ca)).returncode == 0
    p1, p2 = free_udp_port(), free_udp_port()
    for me, other, pm, po, i, j in (("n1", "n2", p1, p2, 1, 2), ("n2", "n1", p2, p1, 2, 1)):
        assert pydp("tunnel", "ca", "issue", str(ca), me, "--out", str(tmp_path)).returncode == 0
        (tmp_path / f"{me}.yaml").write_text(yaml.safe_dump({
            "cert": f"{me}.crt", "key": f"{me}.key", "ca": "ca/ca.crt", "crl": "ca/crl.pem",
            "listen": f"127.0.0.1:{pm}", "address": f"192.0.2.{i}",
            "subnets": [f"10.{i}.0.0/24"], "lifetime": {"seconds": 600},
            "peers": [{"node": other, "endpoint": f"127.0.0.1:{po}",
                       "address": f"192.0.2.{j}", "subnets": [f"10.{j}.0.0/24"]}]}))
    return tmp_path / "n1.yaml", tmp_path / "n2.yaml", p1, p2


def test_check_config_errors_name_file_line_and_key(tmp_path):
    c1, _, _, _ = _setup(tmp_path)
    assert "OK, node n1, 1 peers (n2)" in pydp("tunnel", "check", str(c1)).stdout
    doc = yaml.safe_load(c1.read_text())
    doc["listen"] = "localhost"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    line = one_clear_line(pydp("tunnel", "check", str(bad)))
    assert f"{bad}:" in line and "listen: 'localhost' is not ADDRESS:PORT" in line
    bad.write_text(c1.read_text() + "colour: blue\n")
    assert "colour: unknown key" in one_clear_line(pydp("tunnel", "check", str(bad)))
    os.chmod(tmp_path / "n1.key", 0o644)
    assert "readable by others" in one_clear_line(pydp("tunnel", "check", str(c1)))


def _spawn(cfg: Path, sock: Path) -> subprocess.Popen:
    return subprocess.Popen(PYDP + ["tunnel", "run", "--tunnel", str(cfg), "--control",
                                    str(sock)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_nodes_show_and_deny_through_the_control_socket(tmp_path):
    c1, c2, _, _ = _setup(tmp_path)
    s1, s2 = tmp_path / "n1.sock", tmp_path / "n2.sock"
    procs = [_spawn(c1, s1), _spawn(c2, s2)]
    try:
        deadline = time.monotonic() + 30
        doc = None
        while time.monotonic() < deadline:
            r = pydp("tunnel", "show", "--control", str(s1), "--json")
            if r.returncode == 0:
                doc = json.loads(r.stdout)
                if doc["tunnels"][0]["state"] == "up":
                    break
            time.sleep(0.2)
        assert doc and doc["tunnels"][0]["state"] == "up", doc
        assert doc["spiffe_id"] == "spiffe://mesh.local/node/n1"
        assert {s["direction"] for s in doc["tunnels"][0]["sas"]} == {"out", "in"}
        assert all("key" not in s for s in doc["tunnels"][0]["sas"])
        text = pydp("tunnel", "show", "--control", str(s1))
        assert text.returncode == 0 and "peer n2: up" in text.stdout
        assert "out IPv4 spi 0x" in text.stdout and "soft/hard: seconds 480/600" in text.stdout
        r = pydp("tunnel", "rekey", "--control", str(s1))
        assert r.returncode == 0 and "rekeying with n2" in r.stdout
        r = pydp("tunnel", "deny", "n2", "--control", str(s1))
        assert r.returncode == 0 and "torn down: n2" in r.stdout, r.stderr
        doc = json.loads(pydp("tunnel", "show", "--control", str(s1), "--json").stdout)
        assert doc["tunnels"][0]["state"] == "refused" and doc["tunnels"][0]["sas"] == []
        assert "deny list" in doc["tunnels"][0]["last_error"]
        line = one_clear_line(pydp("tunnel", "rekey", "n9", "--control", str(s1)))
        assert "no peer 'n9'" in line
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=20) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "SAs removed, keys wiped" in out and "Traceback" not in err


def test_run_refuses_a_pipeline_without_esp_stages(tmp_path):
    c1, _, _, _ = _setup(tmp_path)
    line = one_clear_line(pydp("tunnel", "run", "pipelines/forward.yaml", "--tunnel", str(c1),
                               "--port", "in=net_null0", "--port", "out=net_null1", "--no-huge",
                               "--control", str(tmp_path / "x.sock"), "--duration", "1"))
    assert "pipeline 'forward' has no esp_encrypt stage" in line


def test_show_against_a_dataplane_without_tunnels(tmp_path):
    sock = tmp_path / "plain.sock"
    p = subprocess.Popen(PYDP + ["run", "pipelines/forward.yaml", "--port", "in=net_null0",
                                 "--port", "out=net_null1,no-rx=1", "--no-huge", "--control",
                                 str(sock), "--duration", "30", "--interval", "60"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not sock.exists():
            time.sleep(0.1)
        line = one_clear_line(pydp("tunnel", "show", "--control", str(sock)))
        assert "runs no tunnel manager" in line
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
