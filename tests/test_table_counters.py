"""Trace table hits and counters of the lb and ESP stages (issue #6 on issues #4, #5).

A packet traced through pipelines/load-balancer.yaml names its service and
backend; through pipelines/tunnel-gateway.yaml its SA. The per-backend and
per-SA counters (per worker, summed) match what scapy sent, in
``pydp.table_stats`` and in /metrics parsed by prometheus_client.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from conftest import PIPELINES
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from test_esp import scapy_sa
from test_stages import eth, pid, tag

from pydp import Dataplane, Pipeline
from pydp import table_stats as ts
from pydp.metrics import MetricsServer

parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict[tuple, float]:
    """name, sorted labels -> value, by prometheus_client's parser."""
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def later(fn: Any, delay: float = 0.3) -> threading.Thread:
    """Run fn after the trace is armed (dp.trace blocks)."""
    def go() -> None:
        time.sleep(delay)
        fn()
    t = threading.Thread(target=go)
    t.start()
    return t


def capture_all(dp: Dataplane, port: str, n: int) -> list[Ether]:
    got = dp.port(port).capture(count=n, timeout=10)
    assert len(got) == n, f"port {port}: {len(got)} of {n}"
    return [Ether(bytes(p)) for p in got]


def test_lb_trace_names_service_and_backend_and_counters_match(ring_name):
    pl = Pipeline.load(PIPELINES / "load-balancer.yaml")
    with Dataplane(pl, ports={p: ring_name() for p in pl.ports}) as dp, \
            MetricsServer(dp.stats, 0, pipeline=pl.name, dp=dp) as ms:
        ms.start()
        dp.start()
        syn = [eth() / IP(src="10.77.0.5", dst="10.77.0.100")
               / TCP(sport=30000 + i, dport=80, flags="S") / tag(i) for i in range(8)]
        t = later(lambda: dp.port("clients").inject(syn[:1]))
        recs = dp.trace(1, "tcp", timeout=10)
        t.join()
        dp.port("clients").inject(syn[1:])
        out: dict[int, Ether] = {}
        deadline = time.monotonic() + 10
        while len(out) < 8 and time.monotonic() < deadline:
            for be in ("be1", "be2", "be3"):
                n = dp.port(be).pending()
                if n:
                    for p in capture_all(dp, be, n):
                        out[pid(p)] = p
            time.sleep(0.01)
        assert sorted(out) == list(range(8))
        # the backend's reply to packet 0, traced: un-NAT names the same backend
        b0 = out[0][IP].dst
        reply = eth() / IP(src=b0, dst="10.77.0.5") / TCP(sport=8080, dport=30000,
                                                         flags="SA") / tag(100)
        port0 = {"10.77.1.11": "be1", "10.77.1.12": "be2", "10.77.1.13": "be3"}[b0]
        t = later(lambda: dp.port(port0).inject([reply]))
        rrec = dp.trace(1, "tcp", timeout=10)
        t.join()
        back = capture_all(dp, "clients", 1)[0]
        assert back[IP].src == "10.77.0.100" and back[TCP].sport == 80
        stats = ts.lb_stats(dp, "lb")
        scrape = samples(ms.render())
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    # trace: service by name, backend as "service addr:port", where it really went
    hits = {h.table: h for h in recs[0].hits}
    assert hits["service"].name == "web" and hits["service"].id == 0
    assert hits["backend"].name == f"web {b0}:8080"
    assert "hit service web" in recs[0].format()
    assert f"hit backend web {b0}:8080" in recs[0].format()
    rh = {h.table: h for h in rrec[0].hits}
    assert "service" not in rh and rh["backend"].name == f"web {b0}:8080"
    # counters: per backend, summed over workers, = what scapy sent (and the reply)
    (web,) = stats
    sent: dict[str, list[int]] = {}
    for i, p in out.items():
        sent.setdefault(f"{p[IP].dst}:8080", []).append(len(syn[i]))
    sent[f"{b0}:8080"].append(len(reply))
    for b in web["backends"]:
        exp = sent.get(b["backend"], [])
        assert (b["packets"], b["bytes"]) == (len(exp), sum(exp)), b
        assert b["connections_total"] == b["connections"] == \
            len([i for i, p in out.items() if f"{p[IP].dst}:8080" == b["backend"]])
        lab = (("backend", b["backend"]), ("pipeline", pl.name), ("service", "web"),
               ("stage", "lb"))
        assert scrape[("pydp_lb_backend_packets_total", lab)] == len(exp)
        assert scrape[("pydp_lb_backend_bytes_total", lab)] == sum(exp)
        assert scrape[("pydp_lb_backend_connections", lab)] == b["connections"]
    assert web["packets"] == 9 and web["connections"] == 8


def test_esp_trace_names_the_sa_and_counters_match(ring_name):
    pl = Pipeline.load(PIPELINES / "tunnel-gateway.yaml")
    dec = {s.spi: s for s in pl.stage("decrypt").sas}
    clear = [eth() / IP(src="10.1.0.9", dst="10.2.3.4") / UDP(dport=53) / tag(i)
             for i in range(5)]
    s4 = scapy_sa(dec[0x2001])
    peer = [eth() / s4.encrypt(IP(src="10.2.0.1", dst="10.1.0.1") / UDP() / tag(30 + i))
            for i in range(3)]
    with Dataplane(pl, ports={p: ring_name() for p in pl.ports}) as dp, \
            MetricsServer(dp.stats, 0, pipeline=pl.name, dp=dp) as ms:
        ms.start()
        dp.start()
        t = later(lambda: dp.port("inside").inject(clear[:1]))
        renc = dp.trace(1, "udp", timeout=10)
        t.join()
        dp.port("inside").inject(clear[1:])
        capture_all(dp, "outside", 5)
        t = later(lambda: dp.port("outside").inject(peer[:1]))
        rdec = dp.trace(1, "esp", timeout=10)
        t.join()
        dp.port("outside").inject(peer[1:])
        capture_all(dp, "inside", 3)
        sas = {(a["stage"], a["spi"]): a for a in ts.sections(dp)["sas"]}
        text = ms.render()
        scrape = samples(text)
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    assert [h.name for h in renc[0].hits if h.table == "sa"] == ["spi 0x1001"]
    assert renc[0].hits[-1].id == 0x1001 and "hit sa spi 0x1001" in renc[0].format()
    assert [(h.stage, h.name) for h in rdec[0].hits if h.table == "sa"] == \
        [("decrypt", "spi 0x2001")]
    # bytes: the inner IP bytes (what the C stages count), 14 = Ethernet
    enc, dc = sas[("encrypt", 0x1001)], sas[("decrypt", 0x2001)]
    assert (enc["packets"], enc["bytes"]) == (5, sum(len(p) - 14 for p in clear))
    assert (dc["packets"], dc["bytes"]) == (3, sum(len(s4.decrypt(p[IP])) for p in peer))
    assert sas[("encrypt", 0x1002)]["packets"] == 0
    lab = (("direction", "out"), ("pipeline", pl.name), ("spi", "0x1001"), ("stage", "encrypt"))
    assert scrape[("pydp_esp_sa_packets_total", lab)] == 5
    assert scrape[("pydp_esp_sa_bytes_total", lab)] == enc["bytes"]
    lab = (("direction", "in"), ("pipeline", pl.name), ("spi", "0x2001"), ("stage", "decrypt"))
    assert scrape[("pydp_esp_sa_packets_total", lab)] == 3
    assert scrape[("pydp_esp_sa_drops_total", (("pipeline", pl.name), ("reason", "replayed"),
                                                ("spi", "0x2001"), ("stage", "decrypt")))] == 0
    # no key material: not the keys' bytes, not a label named like one
    keys = re.findall(r'key: "0x([0-9a-f]+)"', (PIPELINES / "tunnel-gateway.yaml").read_text())
    assert len(keys) == 4
    for k in keys:
        assert k[:16] not in text
    assert "key" not in text
