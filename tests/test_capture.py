"""Capture to pcapng (rte_pcapng): tshark reads it, and the packets are the ones sent."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import PIPELINES
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import rdpcap
from test_stages import eth, pid, tag

from pydp import Busy, Dataplane, InvalidArgument, NotFound, Pipeline
from pydp._core import lib
from pydp.capture import Capture

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (tools/setup.sh)")


def tshark(path: str, *fields: str) -> list[list[str]]:
    args = [TSHARK, "-r", path]
    if fields:
        args += ["-T", "fields"] + [x for f in fields for x in ("-e", f)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def packets(n: int, base: int = 0) -> list:
    return [eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53)
            / tag(base + i) for i in range(n)]


@needs_tshark
def test_capture_port_rx_and_tx_read_by_tshark(ring_name, tmp_path):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    sent = packets(5) + [eth() / IP(ihl=1) / tag(99)]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        with dp.capture(str(tmp_path / "out.pcapng"), port="out", count=5) as cap_out:
            dp.port("in").inject(sent)
            out = dp.port("out").capture(count=5)
            assert cap_out.wait(10)
            # the count is used up: the worker loop is back on its plain path
            assert lib.pd_obs_armed(dp._cp) == 0
        with Capture(dp, tmp_path / "in.pcapng", port="in") as cap_in:
            dp.port("in").inject(sent)
            dp.port("out").capture(count=5)
            assert dp.wait_idle(0.3)
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    assert cap_out.info.written == 5 and cap_out.info.dropped == 0
    assert cap_out.info.leaked == 0 and cap_in.info.leaked == 0  # every copy came back
    assert cap_in.info.written == 6 and cap_in.info.dropped == 0
    # tshark reads both; the tx side holds exactly what left the port, in order
    rows = tshark(str(tmp_path / "out.pcapng"), "frame.len", "udp.srcport",
                  "frame.packet_flags_direction")
    assert [r[1] for r in rows] == [str(1000 + i) for i in range(5)]
    assert {r[2] for r in rows} == {"0x00000002"}  # outbound
    got = rdpcap(str(tmp_path / "out.pcapng"))
    assert [bytes(p) for p in got] == [bytes(p) for p in out]
    got_in = rdpcap(str(tmp_path / "in.pcapng"))
    assert [bytes(p) for p in got_in] == [bytes(p) for p in sent]
    rows = tshark(str(tmp_path / "in.pcapng"), "frame.packet_flags_direction")
    assert rows == [["0x00000001"]] * 6  # inbound


@needs_tshark
def test_capture_stage_with_filter(ring_name, tmp_path):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    udp = packets(4)
    tcp = [eth() / IP(src="10.0.0.1", dst="10.0.0.3") / TCP(dport=80) / tag(50 + i)
           for i in range(3)]
    mix = [udp[0], tcp[0], udp[1], tcp[1], udp[2], tcp[2], udp[3]]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        with Capture(dp, tmp_path / "fwd.pcapng", stage="fwd", filter="tcp", snaplen=40) \
                as cap:
            dp.port("in").inject(mix)
            dp.port("out").capture(count=7)
            assert dp.wait_idle(0.3)
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    assert cap.info.written == 3
    got = rdpcap(str(tmp_path / "fwd.pcapng"))
    assert [bytes(p) for p in got] == [bytes(p)[:40] for p in tcp]
    rows = tshark(str(tmp_path / "fwd.pcapng"), "frame.len", "frame.cap_len")
    assert rows == [[str(len(p)), "40"] for p in tcp]


def test_capture_ring_full_counts_copies_and_loses_no_packet(ring_name, tmp_path):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    n = 6000
    sent = [bytes(p) for p in packets(n)]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        # nothing drains for 60 s: the 4096-slot capture ring fills up
        cap = Capture(dp, tmp_path / "full.pcapng", port="out", poll=60)
        for i in range(0, n, 500):
            dp.port("in").inject(sent[i:i + 500])
        out = dp.port("out").capture(count=n, timeout=30, raw=True)
        info = cap.stop()
        dp.stop()
        st = dp.stats()
        assert st.balanced() and dp.pool.in_use() == 0
    assert len(out) == n and [pid(p) for p in out] == list(range(n))
    assert info.dropped > 0 and info.written + info.dropped == n and info.leaked == 0
    assert len(rdpcap(str(tmp_path / "full.pcapng"))) == info.written


def test_capture_errors(ring_name, tmp_path):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        with pytest.raises(InvalidArgument, match="one of them"):
            Capture(dp, tmp_path / "x.pcapng")
        with pytest.raises(InvalidArgument, match="one of them"):
            Capture(dp, tmp_path / "x.pcapng", port="in", stage="fwd")
        with pytest.raises(InvalidArgument, match="no stage 'nope'"):
            Capture(dp, tmp_path / "x.pcapng", stage="nope")
        with pytest.raises(InvalidArgument, match="filter 'tcp port': "):
            Capture(dp, tmp_path / "x.pcapng", port="in", filter="tcp port")
        with pytest.raises(NotFound, match="/no/such/dir/x.pcapng: No such file"):
            Capture(dp, "/no/such/dir/x.pcapng", port="in")
        with Capture(dp, tmp_path / "a.pcapng", port="in"):
            with pytest.raises(Busy, match="already running"):
                Capture(dp, tmp_path / "b.pcapng", port="out")
        with Capture(dp, tmp_path / "b.pcapng", port="out") as cap:  # free again
            assert cap.poll().written == 0
