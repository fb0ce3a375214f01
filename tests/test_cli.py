"""The pydp command line, run as a user would: a subprocess per command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PIPELINES, ROOT
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

PYDP = [sys.executable, "-m", "pydp.cli"]


def env() -> dict[str, str]:
    """Each pydp process gets its own control socket, so runs never collide."""
    e = dict(os.environ)
    e["PYDP_CONTROL"] = f"/tmp/pydp-test-{os.getpid()}-{time.time_ns()}.sock"
    return e


def pydp(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(PYDP + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env(), **kw)


def one_clear_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pydp: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def pkts(n: int, bad: int = 0) -> list:
    good = [Ether() / IP(src="10.0.0.1", dst="10.0.2.5") / UDP(sport=i + 1, dport=9)
            / Raw(b"id=%06d" % i) for i in range(n)]
    return good + [Ether() / IP(ihl=2) / UDP() for _ in range(bad)]


def test_run_until_idle_json_on_pcap(tmp_path):
    wrpcap(str(tmp_path / "in.pcap"), pkts(300, bad=7))
    out = tmp_path / "out.pcap"
    r = pydp("run", "pipelines/forward.yaml",
             "--port", f"in=net_pcap0,rx_pcap={tmp_path / 'in.pcap'}",
             "--port", f"out=net_pcap1,tx_pcap={out}", "--until-idle", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stopped_by"] == "idle"
    assert doc["ports"]["in"]["rx_packets"] == 307
    assert doc["ports"]["out"]["tx_packets"] == 300
    assert doc["stages"]["parse"]["drops"]["bad-ipv4-header-length"] == 7
    assert doc["drops"] == {"parse/bad-ipv4-header-length": 7}
    assert doc["totals"]["balanced"] is True
    assert doc["memory"] in ("hugepages", "no-huge (4 KiB pages)")
    got = rdpcap(str(out))
    assert len(got) == 300 and all(p.dst == "02:00:00:00:00:02" for p in got)


def test_run_router_until_idle(tmp_path):
    wrpcap(str(tmp_path / "in.pcap"), pkts(20) + [Ether() / IP(dst="192.168.9.9") / UDP()])
    r = pydp("run", "pipelines/router.yaml",
             "--port", f"p0=net_pcap0,rx_pcap={tmp_path / 'in.pcap'}",
             "--port", f"p1=net_pcap1,tx_pcap={tmp_path / 'o.pcap'}", "--until-idle", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ports"]["p1"]["tx_packets"] == 20
    assert doc["drops"] == {"route/no-route": 1}
    assert all(p[IP].ttl == 63 for p in rdpcap(str(tmp_path / "o.pcap")))


def test_run_duration_prints_stats_lines_and_summary():
    r = pydp("run", "pipelines/forward.yaml", "--port", "in=net_null0",
             "--port", "out=net_null1,no-rx=1", "--duration", "2.2")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) >= 2 and "Mpps" in lines[-1]
    assert "stopped (duration)" in r.stdout and "balanced" in r.stdout
    assert "memory:" in r.stdout


def test_demo_runs_and_ends_by_itself():
    r = pydp("demo", "--duration", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["totals"]["rx"] > 1000
    assert doc["drops"].get("parse/bad-ipv4-checksum", 0) > 0
    assert doc["totals"]["balanced"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly(sig):
    p = subprocess.Popen(PYDP + ["run", "pipelines/forward.yaml", "--port", "in=net_null0",
                                 "--port", "out=net_null1,no-rx=1", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=env())
    try:
        deadline = time.time() + 30
        line = ""
        while time.time() < deadline and "pipeline 'forward'" not in line:
            line = p.stderr.readline()
        time.sleep(1.2)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["stopped_by"] == sig.name
    assert doc["totals"]["rx"] > 0 and doc["totals"]["balanced"]
    assert "ports closed" in err


def test_check_ok_for_every_shipped_pipeline():
    for f in sorted(PIPELINES.glob("*.yaml")):
        r = pydp("check", str(f.relative_to(ROOT)))
        assert r.returncode == 0, (f, r.stderr)
        assert "OK" in r.stdout


def test_check_needs_no_root_nor_ports(tmp_path):
    # check validates without EAL: it must not even create hugepage files
    r = pydp("check", "pipelines/router.yaml", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["name"] == "router"


def write(tmp_path: Path, text: str) -> str:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return str(f)


@pytest.mark.parametrize("text,expect", [
    ("name: x\nports: [a]\nstages:\n  - {name: s, type: nope}\n", "p.yaml:4: unknown stage type"),
    ("name: x\nports: [a]\nstages:\n  - name: s\n    type: parse\n    nxt: t\n",
     "p.yaml:6: stage type 'parse' has no key 'nxt'"),
    ("name: x\nports: [a\n", "p.yaml:3: YAML syntax"),
    ("name: x\nports: [a]\ncolour: red\nstages: []\n", "p.yaml:3: unknown key 'colour'"),
])
def test_check_bad_yaml_one_line(tmp_path, text, expect):
    r = pydp("check", write(tmp_path, text))
    assert expect in one_clear_line(r)


def test_run_unknown_stage_is_one_line(tmp_path):
    f = write(tmp_path, "name: x\nports: [a]\nstages:\n  - {name: s, type: teleport}\n")
    line = one_clear_line(pydp("run", f, "--port", "a=net_null0"))
    assert "unknown stage type 'teleport'" in line


@pytest.mark.parametrize("args,expect", [
    (["--port", "in=net_null0"], "port 'out'"),
    (["--port", "in=net_null0", "--port", "out=net_null1", "--port", "x=net_null2"],
     "no port 'x'"),
    (["--port", "in", "--port", "out=net_null1"], "NAME=DEVARGS"),
    (["--port", "in=net_nosuchdriver0", "--port", "out=net_null1"], "net_nosuchdriver0"),
    (["--port", "in=net_null0", "--port", "out=net_null1", "--lcores", "0"], "--lcores"),
    (["--port", "in=net_null0", "--port", "out=net_null1", "--lcores", "x"], "--lcores"),
    (["--port", "in=net_pcap0,rx_pcap=/does/not/exist", "--port", "out=net_null1"],
     "rx_pcap=/does/not/exist"),
    (["--port", "in=has space", "--port", "out=net_null1"], "devargs"),
])
def test_run_bad_ports_one_line(args, expect):
    line = one_clear_line(pydp("run", "pipelines/forward.yaml", "--duration", "1", *args))
    assert expect in line, line


def test_run_missing_file_one_line():
    line = one_clear_line(pydp("run", "pipelines/nope.yaml", "--port", "in=net_null0"))
    assert "nope.yaml" in line


def test_not_root_is_one_line():
    # run the real CLI with the effective uid reported as an ordinary user's
    code = ("import os, sys; os.geteuid = lambda: 1000; from pydp.cli import main; "
            "sys.argv = ['pydp'] + sys.argv[1:]; main()")
    r = subprocess.run([sys.executable, "-c", code, "run", "pipelines/forward.yaml",
                        "--port", "in=net_null0", "--port", "out=net_null1"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "needs root" in one_clear_line(r)


def test_ports_lists_nics():
    r = pydp("ports")
    assert r.returncode == 0, r.stderr
    assert "Network devices" in r.stdout


def test_help_and_version():
    assert pydp("--help").returncode == 0
    assert "0.1.0" in pydp("--version").stdout


def test_no_huge_fallback_runs_and_says_so():
    """On 4 KiB pages (no hugepages) the same pipeline runs, and the stats say which."""
    r = pydp("run", "pipelines/forward.yaml", "--port", "in=net_null0",
             "--port", "out=net_null1,no-rx=1", "--duration", "1", "--no-huge", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["memory"] == "no-huge (4 KiB pages)"
    assert doc["totals"]["rx"] > 0 and doc["totals"]["balanced"]
    assert "memory: no-huge" in r.stderr


def test_run_firewall_pipeline_on_pcap(tmp_path):
    """The shipped firewall: allowed flows and their replies pass, the rest is dropped."""
    from scapy.layers.inet import TCP
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    syn = eth / IP(src="198.51.100.7", dst="10.0.1.5") / TCP(sport=40000, dport=80, flags="S")
    reply = eth / IP(src="10.0.1.5", dst="198.51.100.7") / TCP(sport=80, dport=40000, flags="SA")
    ssh = eth / IP(src="198.51.100.7", dst="10.0.1.5") / TCP(sport=40001, dport=22, flags="S")
    web_to_db = eth / IP(src="10.0.1.5", dst="10.0.3.10") / TCP(sport=40002, dport=5432)
    wrpcap(str(tmp_path / "in.pcap"), [syn, reply, ssh, web_to_db])
    r = pydp("run", "pipelines/firewall.yaml",
             "--port", f"in=net_pcap0,rx_pcap={tmp_path / 'in.pcap'}",
             "--port", f"out=net_pcap1,tx_pcap={tmp_path / 'out.pcap'}",
             "--until-idle", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ports"]["out"]["tx_packets"] == 2  # the SYN and its reply
    assert doc["drops"] == {"policy/policy-deny": 2}  # no-ssh-from-outside, web-never-to-db
    assert doc["totals"]["balanced"]
    got = rdpcap(str(tmp_path / "out.pcap"))
    assert [p[TCP].flags for p in got] == ["S", "SA"]
