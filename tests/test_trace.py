"""Packet trace: stages, verdicts (emit / tx / drop with its reason) and table hits.

Packets carry an id; the trace's scapy copy of each packet is matched to the
packet sent, and the records are compared with what the pipeline did to it.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import PIPELINES
from scapy.layers.inet import IP, TCP, UDP
from test_stages import eth, pid, tag

from pydp import Dataplane, InvalidArgument, Pipeline
from pydp import trace as tr
from pydp.obs_service import rule_namer
from pydp.policy.service import PolicyService

POLICY = """\
identities:
  lab: {labels: {zone: lab}, addresses: [10.0.0.0/24]}
  web: {labels: {tier: web}, addresses: [10.0.1.0/24]}
rules:
  - {name: lab-to-web, action: allow, from: {zone: lab}, to: {tier: web},
     ports: [{proto: udp, port: 80}]}
  - {name: no-telnet, action: deny, from: any, to: any, ports: [{proto: tcp, port: 23}]}
"""

FIREWALL = """\
name: fw
ports: [in, out]
inputs: {in: parse}
stages:
  - {name: parse, type: parse, next: flows}
  - {name: flows, type: conntrack, mode: confirm, next: policy, timeouts: {udp: 1}}
  - {name: policy, type: policy, conntrack: flows, policy: policy.yaml, next: fwd}
  - {name: fwd, type: forward, port: out}
"""


def _inject_later(dp: Dataplane, port: str, pkts: list, delay: float = 0.3) -> threading.Thread:
    """Inject after the trace is armed (dp.trace blocks)."""
    def go() -> None:
        time.sleep(delay)
        dp.port(port).inject(pkts)
    t = threading.Thread(target=go)
    t.start()
    return t


def test_trace_forward_filter_verdicts_and_packets(ring_name):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    udp = [eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53) / tag(i) for i in range(6)]
    tcp = [eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80) / tag(100 + i)
           for i in range(3)]
    bad = [eth() / IP(ihl=1) / tag(200)]
    mix = [udp[0], tcp[0], udp[1], bad[0], udp[2], tcp[1], udp[3], udp[4], tcp[2], udp[5]]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        t = _inject_later(dp, "in", mix)
        recs = dp.trace(4, "udp", timeout=10)
        t.join()
        out = dp.port("out").capture(count=9)
        # a second trace, of everything IP, sees the drop and its reason
        t = _inject_later(dp, "in", bad + udp[:1])
        recs2 = dp.trace(2, "ip", timeout=10)
        t.join()
        dp.port("out").capture(count=1)
        assert tr.remaining(dp) == 0
        dp.stop()
        st = dp.stats()
        assert st.balanced() and dp.pool.in_use() == 0
    assert len(out) == 9
    # the first four UDP packets, in order, and nothing else
    assert [pid(r.packet) for r in recs] == [0, 1, 2, 3]
    for r in recs:
        assert bytes(r.packet) == bytes(udp[pid(r.packet)])[:128]
        assert r.length == len(udp[0]) and r.in_port == "in"
        assert r.stages == ["parse", "fwd"]
        assert r.verdict == "tx out"
        assert [e.kind for e in r.events] == ["stage", "emit", "stage", "tx"]
        assert r.events[1].to == "fwd"
    assert [pid(r.packet) for r in recs2] == [200, 0]
    assert recs2[0].verdict == "drop parse/bad-ipv4-header-length"
    assert recs2[0].stages == ["parse"]
    assert recs2[1].verdict == "tx out"
    assert "verdict: drop parse/bad-ipv4-header-length" in recs2[0].format()


def test_trace_firewall_rule_and_flow_hits(ring_name, tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "fw.yaml").write_text(FIREWALL)
    pl = Pipeline.load(tmp_path / "fw.yaml")
    fwd = eth() / IP(src="10.0.0.5", dst="10.0.1.7") / UDP(sport=4000, dport=80) / tag(1)
    again = eth() / IP(src="10.0.0.5", dst="10.0.1.7") / UDP(sport=4000, dport=80) / tag(2)
    telnet = eth() / IP(src="10.0.0.5", dst="10.0.1.7") / TCP(dport=23) / tag(3)
    other = eth() / IP(src="10.0.9.9", dst="10.0.1.7") / UDP(dport=80) / tag(4)
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.services["policy"] = PolicyService(dp)
        dp.start()
        tr.start(dp, 4)
        dp.port("in").inject([fwd])
        dp.port("out").capture(count=1)
        dp.port("in").inject([again, telnet, other])
        deadline = time.monotonic() + 10
        recs: list[tr.TraceRecord] = []
        while len(recs) < 4 and time.monotonic() < deadline:
            recs += tr.read(dp, rule_namer(dp))
            time.sleep(0.01)
        tr.stop(dp)
        dp.port("out").capture(count=1)
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    by = {pid(r.packet): r for r in recs}
    assert sorted(by) == [1, 2, 3, 4]
    new = by[1]
    assert new.stages == ["parse", "flows", "policy", "fwd"] and new.verdict == "tx out"
    hits = [(h.table, h.name or h.id) for h in new.hits]
    assert ("rule", "lab-to-web") in hits
    flow_new = [h for h in new.hits if h.table == "flow-new"]
    assert len(flow_new) == 1 and flow_new[0].stage == "flows"
    known = by[2]  # the same flow: found by conntrack, no rule lookup
    assert known.verdict == "tx out"
    assert [h.table for h in known.hits] == ["flow", "flow"]
    assert all(h.id == flow_new[0].id for h in known.hits)
    assert by[3].verdict == "drop policy/policy-deny"
    assert [(h.table, h.name) for h in by[3].hits] == [("rule", "no-telnet")]
    assert by[4].verdict == "drop policy/default-deny"
    assert [(h.table, h.id, h.name) for h in by[4].hits] == [
        ("rule", tr.DEFAULT_RULE, "(default deny)")]
    d = tr.TraceRecord.from_dict(by[3].to_dict())
    assert d == by[3] and d.to_dict()["verdict"] == "drop policy/policy-deny"


def test_trace_bad_filter_and_count(ring_name):
    pl = Pipeline.load(PIPELINES / "forward.yaml")
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        with pytest.raises(InvalidArgument, match="filter 'udp and port': "):
            dp.trace(1, "udp and port", timeout=1)
        with pytest.raises(InvalidArgument, match="count"):
            dp.trace(0)
        with pytest.raises(InvalidArgument, match="count"):
            dp.trace(tr.MAX_COUNT + 1)
        # nothing arrives: an empty list after the timeout, not an error
        dp.start()
        assert dp.trace(3, "udp", timeout=0.3) == []
        dp.stop()


def test_trace_mirror_copy_two_workers_and_disarm(ring_name):
    from pydp._core import lib
    from pydp.stages import Forward, Mirror, Parse
    pl = Pipeline("m", ports=["in", "out", "tap"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="mir"), Mirror("mir", port="tap", next="fwd"),
                          Forward("fwd", port="out", keep_src_mac=True)])
    pkts = [eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i) / tag(i)
            for i in range(8)]
    with Dataplane(pl, ports={"in": ring_name(2), "out": ring_name(2), "tap": ring_name(2)},
                   workers=2) as dp:
        dp.start()
        tr.start(dp, 6)
        assert lib.pd_obs_armed(dp._cp) == lib.PD_OBS_TRACE
        dp.port("in").inject(pkts[:4], queue=0)  # worker 0
        dp.port("in").inject(pkts[4:], queue=1)  # worker 1
        out = dp.port("out").capture(count=8)
        dp.port("tap").capture(count=8)
        deadline = time.monotonic() + 10
        recs: list[tr.TraceRecord] = []
        while len(recs) < 6 and time.monotonic() < deadline:
            recs += tr.read(dp)
            time.sleep(0.01)
        # the count is used up: the workers are back on the plain loop
        assert tr.remaining(dp) == 0 and lib.pd_obs_armed(dp._cp) == 0
        tr.stop(dp)
        dp.stop()
        assert dp.stats().balanced() and dp.pool.in_use() == 0
    assert len(out) == 8 and len(recs) == 6
    assert {r.worker for r in recs} == {0, 1}
    assert len({pid(r.packet) for r in recs}) == 6
    for r in recs:
        assert r.stages == ["parse", "mir", "fwd"] and r.verdict == "tx out"
        kinds = [(e.kind, e.to) for e in r.events if e.stage == "mir"]
        assert ("copy", "port tap") in kinds and ("emit", "fwd") in kinds
