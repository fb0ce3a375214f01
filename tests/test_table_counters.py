"""Trace table hits and counters of the lb and ESP stages (issue #6 on issues #4, #5).

A packet traced through pipelines/load-balancer.yaml names its service and
backend; through pipelines/tunnel-gateway.yaml its SA. The per-backend and
per-SA counters (per worker, summed) match what scapy sent, in
``pydp.table_stats`` and in /metrics parsed by prometheus_client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest
from conftest import PIPELINES, ROOT
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from test_esp import scapy_sa
from test_stages import eth, pid, tag

from pydp import Dataplane, Pipeline
from pydp import table_stats as ts
from pydp.control import call
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


def from_backends(dp: Dataplane, count: int, timeout: float = 10) -> dict[int, Ether]:
    """What the three backend ports sent, by payload id, until `count` came or time ran out."""
    out: dict[int, Ether] = {}
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for be in ("be1", "be2", "be3"):
            n = dp.port(be).pending()
            if n:
                for p in capture_all(dp, be, n):
                    out[pid(p)] = p
        time.sleep(0.01)
    return out


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
        out = from_backends(dp, 8)
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


def _run_bg(args: list[str], sock: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", *args, "--control", sock,
                          "--metrics", "0", "--duration", "120"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p


def _wait_rx(sock: str, port: str, n: int, p: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while not os.path.exists(sock):
        assert p.poll() is None and time.time() < deadline, p.stderr.read()
        time.sleep(0.1)
    while call("stats", sock)["ports"][port]["rx_packets"] < n:
        assert time.time() < deadline, call("stats", sock)
        time.sleep(0.05)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(2)
        p.communicate(timeout=30)
    p.kill()


def test_cli_stats_top_and_metrics_show_services_and_sas(tmp_path):
    """`pydp stats [--json]`, `pydp top` and /metrics of a running `pydp run`: sections
    per service and backend (load-balancer.yaml) and per SA (tunnel-gateway.yaml), with
    the counts of the scapy packets it read from pcap files."""
    from test_cli import pydp
    syn = [eth() / IP(src="10.77.0.5", dst="10.77.0.100")
           / TCP(sport=31000 + i, dport=80, flags="S") / tag(i) for i in range(6)]
    wrpcap(str(tmp_path / "syn.pcap"), syn)
    pl = Pipeline.load(PIPELINES / "tunnel-gateway.yaml")
    s4 = scapy_sa({s.spi: s for s in pl.stage("decrypt").sas}[0x2001])
    clear = [eth() / IP(src="10.1.0.9", dst="10.2.3.4") / UDP(dport=53) / tag(i)
             for i in range(4)]
    peer = [eth() / s4.encrypt(IP(src="10.2.0.1", dst="10.1.0.1") / UDP() / tag(30 + i))
            for i in range(3)]
    wrpcap(str(tmp_path / "clear.pcap"), clear)
    wrpcap(str(tmp_path / "peer.pcap"), peer)
    lb_sock, gw_sock = str(tmp_path / "lb.sock"), str(tmp_path / "gw.sock")
    lb = _run_bg(["pipelines/load-balancer.yaml",
                  "--port", f"clients=net_pcap_ig0,rx_pcap={tmp_path}/syn.pcap,"
                            f"tx_pcap={tmp_path}/c.pcap",
                  *[a for i in (1, 2, 3) for a in
                    ("--port", f"be{i}=net_pcap_ig{i},tx_pcap={tmp_path}/b{i}.pcap")]], lb_sock)
    try:
        url = lb.stdout.readline().split("metrics: ")[1].split()[0]
        _wait_rx(lb_sock, "clients", 6, lb)
        r = pydp("stats", "--json", "--control", lb_sock)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        (web,) = doc["services"]
        assert "sas" not in doc and web["service"] == "web" and web["vip"] == "10.77.0.100"
        bks = {b["backend"]: b for b in web["backends"]}
        assert set(bks) == {"10.77.1.11:8080", "10.77.1.12:8080", "10.77.1.13:8080"}
        assert sum(b["packets"] for b in bks.values()) == 6 == web["connections"]
        assert sum(b["bytes"] for b in bks.values()) == sum(len(p) for p in syn)
        tx = {f"10.77.1.1{i}:8080": doc["ports"][f"be{i}"]["tx_packets"] for i in (1, 2, 3)}
        assert {k: b["packets"] for k, b in bks.items()} == tx
        text = pydp("stats", "--control", lb_sock).stdout
        assert "services:" in text and "lb/web 10.77.0.100:80/tcp maglev" in text
        top = pydp("top", "--once", "--control", lb_sock)
        assert top.returncode == 0, top.stderr
        assert "SERVICE / BACKEND" in top.stdout and "10.77.1.12:8080" in top.stdout
        s = samples(urllib.request.urlopen(url, timeout=10).read().decode())
        for k, b in bks.items():
            lab = (("backend", k), ("pipeline", "load-balancer"), ("service", "web"),
                   ("stage", "lb"))
            assert s[("pydp_lb_backend_packets_total", lab)] == b["packets"]
            assert s[("pydp_lb_backend_connections_total", lab)] == b["connections_total"]
    finally:
        _stop(lb)
    gw = _run_bg(["pipelines/tunnel-gateway.yaml",
                  "--port", f"inside=net_pcap_ig4,rx_pcap={tmp_path}/clear.pcap,"
                            f"tx_pcap={tmp_path}/in.pcap",
                  "--port", f"outside=net_pcap_ig5,rx_pcap={tmp_path}/peer.pcap,"
                            f"tx_pcap={tmp_path}/out.pcap"], gw_sock)
    try:
        url = gw.stdout.readline().split("metrics: ")[1].split()[0]
        _wait_rx(gw_sock, "inside", 4, gw)
        _wait_rx(gw_sock, "outside", 3, gw)
        r = pydp("stats", "--json", "--control", gw_sock)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert "services" not in doc
        sas = {a["spi_hex"]: a for a in doc["sas"]}
        assert set(sas) == {"0x1001", "0x1002", "0x2001", "0x2002"}
        assert (sas["0x1001"]["packets"], sas["0x1001"]["bytes"]) == \
            (4, sum(len(p) - 14 for p in clear))
        assert sas["0x2001"]["packets"] == 3 and sas["0x2002"]["packets"] == 0
        assert not any("key" in k for a in doc["sas"] for k in a)
        text = pydp("stats", "--control", gw_sock).stdout
        assert "SAs:" in text and "spi 0x2001" in text
        top = pydp("top", "--once", "--control", gw_sock)
        assert top.returncode == 0 and "decrypt spi 0x2001" in top.stdout, top.stderr
        s = samples(urllib.request.urlopen(url, timeout=10).read().decode())
        assert s[("pydp_esp_sa_packets_total", (("direction", "in"), ("pipeline", pl.name),
                                                ("spi", "0x2001"), ("stage", "decrypt")))] == 3
    finally:
        _stop(gw)


def test_graph_of_lb_and_tunnel_renders_without_keys(tmp_path):
    """`pydp graph` of both pipelines writes an SVG; no SA key is in the drawing."""
    from test_cli import pydp
    for name in ("load-balancer", "tunnel-gateway"):
        out = tmp_path / f"{name}.svg"
        r = pydp("graph", f"pipelines/{name}.yaml", "-o", str(out))
        if r.returncode != 0 and "dot" in r.stderr:
            pytest.skip("Graphviz dot is not installed")
        assert r.returncode == 0, r.stderr
        svg = out.read_text()
        assert "<svg" in svg and ("lb" in svg if name == "load-balancer" else "encrypt" in svg)
        assert "0001020304" not in svg and "5051525354" not in svg


def test_lb_counters_are_per_worker_rows_summed(ring_name):
    """Two workers: client packets on queue 0 (worker 0), the backends' replies on
    queue 1 (worker 1). Each worker counts in its own row; the sums are the totals."""
    pl = Pipeline.load(PIPELINES / "load-balancer.yaml")
    with Dataplane(pl, ports={p: ring_name(2) for p in pl.ports}, workers=2) as dp:
        dp.start()
        syn = [eth() / IP(src="10.77.0.5", dst="10.77.0.100")
               / TCP(sport=32000 + i, dport=80, flags="S") / tag(i) for i in range(12)]
        dp.port("clients").inject(syn, queue=0)
        out = from_backends(dp, 12)
        assert sorted(out) == list(range(12))
        port_of = {"10.77.1.11": "be1", "10.77.1.12": "be2", "10.77.1.13": "be3"}
        replies = {i: eth() / IP(src=p[IP].dst, dst="10.77.0.5")
                   / TCP(sport=8080, dport=32000 + i, flags="SA") / tag(100 + i)
                   for i, p in out.items()}
        for i, r in replies.items():
            dp.port(port_of[out[i][IP].dst]).inject([r], queue=1)
        assert len(capture_all(dp, "clients", 12)) == 12
        rows = ts.lb_counters(dp, "lb").copy()
        stats = {b["backend"]: b for b in ts.lb_stats(dp, "lb")[0]["backends"]}
        _, ids = ts.lb_live(dp, "lb")
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    for name, bid in ids["web"].items():
        mine = [i for i, p in out.items() if f"{p[IP].dst}:8080" == name]
        # worker 0 saw the clients' packets and assigned the flows, worker 1 the replies
        assert rows[0, bid, 0] == len(mine) and rows[0, bid, 2] == len(mine)
        assert rows[1, bid, 0] == len(mine) and rows[1, bid, 2] == 0
        assert rows[1, bid, 1] == sum(len(replies[i]) for i in mine)
        assert stats[name]["packets"] == 2 * len(mine)
        assert stats[name]["bytes"] == sum(len(syn[i]) + len(replies[i]) for i in mine)
    assert not rows[2:].any()


def test_sa_counters_are_per_worker_rows_summed(ring_name):
    """One outbound SA fed on two queues (two workers): a row each, summed by sa_list."""
    pl = Pipeline.load(PIPELINES / "tunnel-gateway.yaml")
    clear = [eth() / IP(src="10.1.0.9", dst="10.2.3.4") / UDP(dport=53) / tag(i)
             for i in range(5)]
    with Dataplane(pl, ports={p: ring_name(2) for p in pl.ports}, workers=2) as dp:
        dp.start()
        dp.port("inside").inject(clear[:3], queue=0)
        dp.port("inside").inject(clear[3:], queue=1)
        assert len(capture_all(dp, "outside", 5)) == 5
        rows = ts.sa_counters(dp, "encrypt", 0x1001)
        listed = {a["spi"]: a for a in dp.sa_list("encrypt")}[0x1001]
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    assert rows.shape == (2, 10)
    assert list(rows[:, 0]) == [3, 2]
    assert list(rows[:, 1]) == [sum(len(p) - 14 for p in clear[:3]),
                                sum(len(p) - 14 for p in clear[3:])]
    assert (listed["packets"], listed["bytes"]) == (5, int(rows[:, 1].sum()))
    assert not rows[:, 2:].any()
