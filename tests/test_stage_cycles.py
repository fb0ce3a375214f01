"""Per-stage cycle counters (stage/<s>/cycles): on, off, toggled at run time, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import ROOT
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pydp import Dataplane, Pipeline, Source, Vary
from pydp.control import call
from pydp.stages import Forward, Parse

PL = Pipeline("cyc", ports=["in", "out"], inputs={"in": "parse"},
              stages=[Parse("parse", next="fwd"), Forward("fwd", port="out")])
PYDP = [sys.executable, "-m", "pydp.cli"]


def udp(i: int) -> Ether:
    return (Ether(dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.1.1")
            / UDP(sport=1000 + i, dport=80) / Raw(b"id=%06d" % i))


def cycles(dp: Dataplane) -> dict[str, int]:
    return {n: s["cycles"] for n, s in dp.stats().stages().items()}


def run_source(dp: Dataplane, count: int) -> None:
    dp.start()
    deadline = time.monotonic() + 20
    while not dp.sources_done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dp.wait_rx(count)
    dp.stop()


def source(count: int) -> Source:
    return Source([udp(0)], vary=[Vary("UDP.sport", 1000, 1999)], count=count)


def test_off_by_default_cycles_stay_zero(vdev_name):
    with Dataplane(PL, ports={"in": vdev_name("net_null"),
                              "out": vdev_name("net_null") + ",no-rx=1"},
                   sources={"in": source(20000)}) as dp:
        assert "stage/parse/cycles" in dp.counter_names
        assert "stage/fwd/cycles" in dp.counter_names
        run_source(dp, 20000)
        st = dp.stats()
        assert st.stages()["parse"]["in"] == 20000
        assert cycles(dp) == {"parse": 0, "fwd": 0}
        assert st.stage_cost() == {"parse": 0.0, "fwd": 0.0}
        assert "cycles/pkt" not in st.summary()


def test_on_counts_plausible_cycles_per_packet(vdev_name):
    with Dataplane(PL, ports={"in": vdev_name("net_null"),
                              "out": vdev_name("net_null") + ",no-rx=1"},
                   sources={"in": source(50000)}) as dp:
        assert dp.set_stage_cycles(True) is False  # was off
        run_source(dp, 50000)
        st = dp.stats()
        cost = st.stage_cost()
        for name, s in st.stages().items():
            if s["in"]:
                assert s["cycles"] > 0, name
                assert 1 <= cost[name] <= 100000, (name, cost[name])
        assert set(cost) == {"parse", "fwd"}
        assert "cycles/pkt" in st.summary()
        # the JSON round trip over the control socket keeps them
        from pydp.stats import Stats
        assert Stats.from_dict(st.to_dict()).stage_cost() == cost


def test_toggle_at_run_time(ring_name):
    pkts = [udp(i) for i in range(300)]
    with Dataplane(PL, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()

        def burst() -> None:
            assert dp.port("in").inject(pkts) == len(pkts)
            assert len(dp.port("out").capture(count=len(pkts), timeout=5)) == len(pkts)

        burst()
        assert cycles(dp) == {"parse": 0, "fwd": 0}
        assert dp.set_stage_cycles(True) is False
        before = dp.stats()
        burst()
        on = cycles(dp)
        assert on["parse"] > 0 and on["fwd"] > 0
        cost = dp.stats().stage_cost(since=before)
        assert all(1 <= c <= 100000 for c in cost.values()), cost
        assert dp.set_stage_cycles(False) is True
        time.sleep(0.05)  # a burst already past the flag load may still add
        off = cycles(dp)
        burst()
        assert cycles(dp) == off
        dp.stop()
        assert dp.stats().stages()["parse"]["in"] == 900


def _wait_running(sock: str, deadline: float) -> None:
    while not os.path.exists(sock) and time.time() < deadline:
        time.sleep(0.1)
    while not call("info", sock)["running"] and time.time() < deadline:
        time.sleep(0.05)
    while call("stats", sock)["ports"]["in"]["rx_packets"] == 0 and time.time() < deadline:
        time.sleep(0.05)


def test_cli_stats_stages(tmp_path):
    sock = str(tmp_path / "run.sock")
    p = subprocess.Popen(PYDP + ["run", "pipelines/forward.yaml", "--port", "in=net_null0",
                                 "--port", "out=net_null1,no-rx=1", "--duration", "20",
                                 "--control", sock],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_running(sock, time.time() + 20)
        r = subprocess.run(PYDP + ["stats", "--control", sock, "--stages", "--json",
                                   "--interval", "0.5"],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert set(doc["stage_cost"]) == set(doc["stages"])
        assert 1 <= doc["stage_cost"]["parse"] <= 100000, doc["stage_cost"]
        assert doc["stages"]["parse"]["cycles"] > 0
        # it was off: --stages switched it back off
        assert call("stage_cycles", sock, on=False)["was"] is False
        r = subprocess.run(PYDP + ["stats", "--control", sock, "--stages", "--interval", "0.3"],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert "cycles/pkt" in r.stdout and "parse" in r.stdout
        p.send_signal(2)
        p.communicate(timeout=30)
        assert p.returncode == 0
    finally:
        p.kill()


def test_cli_run_stage_cycles_flag():
    r = subprocess.run(PYDP + ["run", "pipelines/forward.yaml", "--generate", "in",
                               "--count", "20000", "--port", "out=net_null1,no-rx=1",
                               "--no-control", "--stage-cycles", "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    parse = doc["stages"]["parse"]
    assert parse["in"] > 0 and parse["cycles"] > 0
    assert 1 <= parse["cycles"] / parse["in"] <= 100000
