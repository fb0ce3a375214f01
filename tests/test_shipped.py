"""Every shipped file (pipelines/, pipelines/policies/, testbeds/) passes ``pydp check``,
renders with ``pydp graph``, and - for pipelines - runs from pcap to idle with nothing
lost: rx = tx + drops per reason, no mbuf in use after stop."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import PIPELINES, ROOT
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap
from test_cli import pydp

SHIPPED = sorted(PIPELINES.glob("*.yaml")) + sorted((ROOT / "testbeds").glob("*.yaml"))
POLICIES = sorted((PIPELINES / "policies").glob("*.yaml"))
NAMES = [str(p.relative_to(ROOT)) for p in SHIPPED]


def traffic() -> list:
    """A mix every shipped pipeline has a verdict for: UDP and TCP in each site's and the
    load balancer's ranges, IPv6, and malformed IPv4 (each with an id in the payload)."""
    pk = [Ether() / IP(src="10.1.0.5", dst="10.2.0.7") / UDP(sport=1000 + i, dport=53)
          / Raw(b"id=%04d" % i) for i in range(30)]
    pk += [Ether() / IP(src="10.0.0.1", dst="10.0.1.5") / TCP(sport=2000 + i, dport=80,
                                                              flags="S") for i in range(10)]
    pk += [Ether() / IP(src="10.9.0.1", dst="10.77.0.100") / TCP(sport=3000 + i, dport=80,
                                                                 flags="S") for i in range(10)]
    pk += [Ether() / IPv6(src="fd00:a::1", dst="fd00:b::1") / UDP() / Raw(b"v6")] * 5
    return pk + [Ether() / IP(ihl=2) / UDP()] * 3


@pytest.mark.parametrize("path", SHIPPED + POLICIES,
                         ids=[str(p.relative_to(ROOT)) for p in SHIPPED + POLICIES])
def test_check_and_graph(path, tmp_path):
    r = pydp("check", str(path))
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), r.stderr
    cmd = ("policy", "graph") if path in POLICIES else ("graph",)
    r = pydp(*cmd, str(path), "-o", str(tmp_path / "g.dot"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.dot").read_text().lstrip().startswith(("digraph", "strict digraph"))


@pytest.mark.parametrize("path", SHIPPED, ids=NAMES)
def test_run_from_pcap_loses_nothing(path, tmp_path):
    wrpcap(str(tmp_path / "in.pcap"), traffic())
    doc = yaml.safe_load(path.read_text())
    ports = doc["ports"]
    polled = list(doc.get("inputs") or ports)  # a port not in `inputs` is transmit-only
    args = []
    for i, p in enumerate(ports):
        args += ["--port", f"{p}=net_pcap{i},rx_pcap={tmp_path / 'in.pcap'},"
                           f"tx_pcap={tmp_path / f'out{i}.pcap'}"]
    r = pydp("run", str(path), *args, "--until-idle", "--json", "--no-control", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "leak" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    rx = sum(p["rx_packets"] for p in doc["ports"].values())
    tx = sum(p["tx_packets"] for p in doc["ports"].values())
    fed = len(traffic()) * len(polled)
    assert rx == fed, doc["ports"]
    assert rx == tx + sum(doc["drops"].values()), doc["drops"]
    assert doc["totals"]["balanced"] is True
    assert doc["pool"]["in_use_after_stop"] == 0
    # every polled port got the 3 malformed packets: each was dropped by its parse stage
    bad = sum(n for k, n in doc["drops"].items() if k.endswith("/bad-ipv4-header-length"))
    assert bad == 3 * len(polled)
