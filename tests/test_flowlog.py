"""Flow log: JSON lines of flow start and end, with counters, verdict and identities."""

from __future__ import annotations

import json
import time

from scapy.layers.inet import IP, TCP, UDP
from test_stages import eth, tag
from test_trace import FIREWALL, POLICY

from pydp import Dataplane, Pipeline
from pydp import flows as fl
from pydp.flowlog import FlowLog


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_flow_log_start_end_counters_identities(ring_name, tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "fw.yaml").write_text(FIREWALL)  # udp flows expire after 1 s idle
    pl = Pipeline.load(tmp_path / "fw.yaml")
    log = tmp_path / "flows.jsonl"

    def u(src: str, dst: str, sport: int, dport: int, i: int):
        return eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / tag(i)

    a = [u("10.0.0.5", "10.0.1.7", 4000, 80, 1), u("10.0.0.5", "10.0.1.7", 4000, 80, 2)]
    a_reply = [u("10.0.1.7", "10.0.0.5", 80, 4000, 3)]
    b = [u("10.0.0.6", "10.0.1.8", 4001, 80, 4)]
    late = [u("10.0.0.9", "10.0.1.9", 4002, 80, 5)]
    telnet = [eth() / IP(src="10.0.0.5", dst="10.0.1.7") / TCP(sport=5000, dport=23) / tag(6)
              for _ in range(2)]
    stranger = [u("192.0.2.1", "10.0.1.7", 999, 80, 7)]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        flog = FlowLog(dp, str(log), interval=0.1)
        flog.start()
        dp.port("in").inject(a)
        dp.port("out").capture(count=2)
        dp.port("in").inject(a_reply + b + telnet + stranger)
        dp.port("out").capture(count=2)
        deadline = time.monotonic() + 15
        while flog.counts["end"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flog.counts["end"] == 2 and fl.count(dp, "flows") == 0
        dp.port("in").inject(late)
        dp.port("out").capture(count=1)
        dp.stop()
        flog.close()
        st = dp.stats()
        assert st.balanced() and dp.pool.in_use() == 0
        assert st.stages()["policy"]["drops"]["policy-deny"] == 2
    lines = _lines(log)
    denies = {x["rule"]: x for x in lines if x["event"] == "deny"}
    assert set(denies) == {"no-telnet", "(default deny)"}
    t = denies["no-telnet"]
    assert (t["proto"], t["src"], t["sport"], t["dst"], t["dport"]) == \
        ("tcp", "10.0.0.5", 5000, "10.0.1.7", 23)
    assert t["packets"] == 2 and t["bytes"] == 2 * len(telnet[0])
    assert t["reason"] == "policy-deny" and t["verdict"] == "deny"
    assert t["src_identity"]["name"] == "lab" and t["dst_identity"]["name"] == "web"
    d = denies["(default deny)"]
    assert d["reason"] == "default-deny" and d["src"] == "192.0.2.1" and d["packets"] == 1
    assert d["src_identity"] is None
    lines = [x for x in lines if x["event"] != "deny"]
    starts = [x for x in lines if x["event"] == "start"]
    ends = {(x["src"], x["sport"]): x for x in lines if x["event"] == "end"}
    assert len(starts) == 3 and len(ends) == 3
    ea = ends[("10.0.0.5", 4000)]
    assert ea["reason"] == "idle" and ea["verdict"] == "allow" and ea["rule"] == "lab-to-web"
    assert ea["packets"] == {"orig": 2, "reply": 1}
    assert ea["bytes"] == {"orig": sum(len(p) for p in a), "reply": len(a_reply[0])}
    assert ea["src_identity"] == {"name": "lab", "labels": {"zone": "lab"}}
    assert ea["dst_identity"] == {"name": "web", "labels": {"tier": "web"}}
    assert ea["proto"] == "udp" and ea["dst"] == "10.0.1.7" and ea["dport"] == 80
    assert ends[("10.0.0.6", 4001)]["packets"] == {"orig": 1, "reply": 0}
    assert ends[("10.0.0.9", 4002)]["reason"] == "stop"
    # each start comes before its end, and carries the same identities
    for s in starts:
        e = ends[(s["src"], s["sport"])]
        assert lines.index(s) < lines.index(e) and s["time"] <= e["time"]
        assert s["dst_identity"] == e["dst_identity"]


def test_flow_ageing_without_log(ring_name, tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "fw.yaml").write_text(FIREWALL)
    pl = Pipeline.load(tmp_path / "fw.yaml")
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name()}) as dp, \
            FlowLog(dp, None, interval=0.1) as flog:
        dp.start()
        flog.start()
        dp.port("in").inject([eth() / IP(src="10.0.0.5", dst="10.0.1.7") / UDP(dport=80)])
        dp.port("out").capture(count=1)
        deadline = time.monotonic() + 15
        while flog.counts["expired"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flog.counts["expired"] == 1 and fl.count(dp, "flows") == 0
        assert flog.counts["start"] == 0  # no log: nothing written, only aged
        dp.stop()
