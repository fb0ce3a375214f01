"""Prometheus /metrics: parsed with prometheus_client's own text parser."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import PIPELINES, ROOT
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pydp import Dataplane, Pipeline
from pydp.metrics import MetricsServer, exposition

parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_on_loopback(ring_name):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp, \
            MetricsServer(dp.stats, 0, pipeline="forward") as ms:
        ms.start()
        assert ms.host == "127.0.0.1"
        dp.start()
        dp.port("in").inject([Ether() / IP() / UDP()] * 5 + [Ether() / IP(ihl=1)] * 2)
        dp.port("out").capture(count=5)
        assert dp.wait_rx(7)
        dp.stop()
        text = urllib.request.urlopen(f"http://127.0.0.1:{ms.port}/metrics", timeout=5) \
            .read().decode()
    s = samples(text)
    lab = (("pipeline", "forward"), ("port", "in"))
    assert s[("pydp_port_rx_packets_total", lab)] == 7
    assert s[("pydp_port_tx_packets_total", (("pipeline", "forward"), ("port", "out")))] == 5
    key = ("pydp_stage_drops_total", (("pipeline", "forward"),
                                      ("reason", "bad-ipv4-header-length"), ("stage", "parse")))
    assert s[key] == 2
    assert "# TYPE pydp_port_rx_packets counter" in text or \
        "# TYPE pydp_port_rx_packets_total counter" in text


def test_exposition_escapes_labels():
    from pydp.stats import Stats
    text = exposition(Stats({"port/a/rx_packets": 1}), pipeline='we"ird')
    assert samples(text)[("pydp_port_rx_packets_total",
                          (("pipeline", 'we"ird'), ("port", "a")))] == 1


def test_pydp_run_metrics_flag(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", "pipelines/forward.yaml",
                          "--port", "in=net_null0", "--port", "out=net_null1,no-rx=1",
                          "--duration", "6", "--no-control", "--metrics", "0"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.time() + 20
        while url is None and time.time() < deadline:
            line = p.stdout.readline()
            if "metrics: " in line:
                url = line.split("metrics: ")[1].split()[0]
        assert url and url.startswith("http://127.0.0.1:")
        key = ("pydp_port_rx_packets_total", (("pipeline", "forward"), ("port", "in")))
        rx = 0
        deadline = time.time() + 10  # the header line is printed just before the workers start
        while rx == 0 and time.time() < deadline:
            rx = samples(urllib.request.urlopen(url, timeout=5).read().decode())[key]
            time.sleep(0.1)
        assert rx > 0
    finally:
        p.terminate()
        p.communicate(timeout=30)
