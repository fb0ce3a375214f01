"""pydp trace, capture, top, --flow-log and the metric providers against a running `pydp run`.

One dataplane for the module: a stateful firewall fed by the template
source (UDP 10.0.0.x -> 10.0.1.1:80, allowed by rule lab-to-web; TCP to
10.0.1.2:443 and IPv6, denied by default; one IPv4 template with a bad
checksum, dropped by parse).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap
from test_trace import FIREWALL, POLICY

from pydp.control import call

parser = pytest.importorskip("prometheus_client.parser")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pydp.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    d = tmp_path_factory.mktemp("obs")
    (d / "policy.yaml").write_text(POLICY)
    (d / "fw.yaml").write_text(FIREWALL)
    sock = str(d / "obs.sock")
    log = d / "flows.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", str(d / "fw.yaml"),
                          "--port", "in=net_null0", "--port", "out=net_null1,no-rx=1",
                          "--generate", "in", "--rate", "1000", "--control", sock,
                          "--metrics", "0", "--flow-log", str(log), "--duration", "120"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert "metrics: http://127.0.0.1:" in first, first + p.stderr.read()
        url = first.split("metrics: ")[1].split()[0]
        deadline = time.time() + 30
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.1)
        while call("stats", sock)["ports"]["in"]["rx_packets"] < 100 and time.time() < deadline:
            time.sleep(0.05)
        yield {"sock": sock, "dir": d, "url": url, "log": log, "proc": p}
    finally:
        if p.poll() is None:
            p.send_signal(2)
            p.communicate(timeout=30)
        p.kill()


def test_cli_trace_json_and_text(running):
    sock = running["sock"]
    r = cli("trace", "--count", "3", "--filter", "udp and dst port 80", "--json",
            "--control", sock)
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)["records"]
    assert len(recs) == 3
    for rec in recs:
        assert rec["stages"] == ["parse", "flows", "policy", "fwd"]
        assert rec["verdict"] == "tx out"
        assert "UDP" in rec["summary"] and "10.0.1.1" in rec["summary"]
        hits = [(h["table"], h["name"]) for h in rec["events"] if h["kind"] == "hit"]
        # a new flow hits the rule and creates a flow; a known one hits the flow
        assert ("rule", "lab-to-web") in hits or ("flow", "") in hits
    r = cli("trace", "--count", "2", "--filter", "tcp", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("verdict: drop policy/default-deny") == 2
    assert "hit rule (default deny)" in r.stdout
    r = cli("trace", "--filter", "tcp and", "--control", sock)
    assert r.returncode == 2 and r.stderr.startswith("pydp: error: filter 'tcp and': ")


def test_second_trace_refused_while_one_waits(running):
    sock = running["sock"]
    # a filter nothing matches: the first trace keeps waiting
    call("trace.start", sock, count=5, filter="udp port 9")
    try:
        r = cli("trace", "--count", "1", "--control", sock)
        assert r.returncode == 2
        assert r.stderr.startswith("pydp: error: a trace is running"), r.stderr
    finally:
        call("trace.stop", sock)
    r = cli("trace", "--count", "1", "--filter", "udp", "--json", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["records"]) == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_cli_capture_port_and_stage(running):
    sock, d = running["sock"], running["dir"]
    out = d / "out.pcapng"
    r = cli("capture", "--port", "out", "-w", str(out), "--count", "20", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote 20 packets to {out}")
    t = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "ip.dst",
                        "-e", "udp.dstport"], capture_output=True, text=True, timeout=60)
    assert t.returncode == 0 and t.stdout.splitlines() == ["10.0.1.1\t80"] * 20
    pk = rdpcap(str(out))
    assert len(pk) == 20 and all(p.haslayer(UDP) and p[UDP].dport == 80 for p in pk)
    v6 = d / "v6.pcapng"
    r = cli("capture", "--stage", "parse", "-w", str(v6), "--count", "5", "--filter", "ip6",
            "--json", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == 5
    assert all(p.haslayer(IPv6) for p in rdpcap(str(v6)))
    r = cli("capture", "--port", "out", "--stage", "parse", "-w", str(v6), "--count", "1",
            "--control", sock)
    assert r.returncode == 2 and "one of them" in r.stderr


def test_cli_top_once_and_iterations(running):
    sock = running["sock"]
    r = cli("top", "--once", "--interval", "0.5", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert "pydp top - pipeline fw" in r.stdout
    for word in ("PORT", "STAGE", "TOP FLOWS", "policy", "default-deny", "10.0.0."):
        assert word in r.stdout
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    assert float(rows["in"][1].rstrip("kM")) > 0  # rx pps of port in
    r = cli("top", "--iterations", "2", "--interval", "0.3", "--control", sock)
    assert r.returncode == 0 and r.stdout.count("pydp top - pipeline fw") == 2


def test_metrics_policy_rule_provider(running):
    text = urllib.request.urlopen(running["url"], timeout=10).read().decode()
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    rule = {s.labels["rule"]: s.value for s in fams["pydp_policy_rule_packets"].samples
            if s.name.endswith("_total")}
    assert rule["lab-to-web"] > 0
    assert "pydp_port_rx_missed" in fams and "pydp_port_errors" in fams
    # the obs provider: what the capture test above wrote (20 + 5 packets)
    cap = {s.name: s.value for s in fams["pydp_capture_packets"].samples}
    assert cap["pydp_capture_packets_total"] == (25 if shutil.which("tshark") else 0)
    assert fams["pydp_trace_remaining"].samples[0].value == 0


def test_flow_log_written_on_stop(running):
    p = running["proc"]
    p.send_signal(2)
    p.communicate(timeout=60)
    assert p.returncode == 0
    lines = [json.loads(x) for x in running["log"].read_text().splitlines()]
    starts = [x for x in lines if x["event"] == "start"]
    ends = [x for x in lines if x["event"] == "end"]
    assert starts and len(ends) == len(starts)
    assert {x["rule"] for x in starts} == {"lab-to-web"}
    assert all(x["src_identity"]["name"] == "lab" and x["dst"] == "10.0.1.1" for x in starts)
    assert {x["reason"] for x in ends} <= {"idle", "stop"}
    assert sum(x["packets"]["orig"] for x in ends) > 0
    # the demo's TCP to 10.0.1.2:443 is denied by default: logged as deny lines
    denies = [x for x in lines if x["event"] == "deny"]
    assert any(x["proto"] == "tcp" and x["dport"] == 443 and x["reason"] == "default-deny"
               and x["rule"] == "(default deny)" and x["src_identity"]["name"] == "lab"
               for x in denies)
