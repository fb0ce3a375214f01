"""The conntrack stage: one flow table entry for both directions of a connection.

Client packets go in on port ``a``, server packets on port ``b``; everything
goes through parse -> conntrack -> forward(out). The flow table is read as
numpy (:mod:`pydp.flows`) while the dataplane runs; per-direction counters
show that each packet got the right direction (the reply flag and the
counters come from the same bit). Every session ends with the accounting
checks of test_stages (rx == tx + drops by reason, tx counters == capture)
and the mbuf pool back to full.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.packet import Packet
from test_stages import Result, _settle, arp, check_accounting, eth, pid, tag

from pydp import ConfigError, Dataplane, InvalidArgument, Pipeline, Source, Vary
from pydp import flows as ft
from pydp._core import ffi, lib
from pydp.stages import Conntrack, Drop, Forward, Parse, stage_drops

CLIENT, SERVER = "10.0.0.1", "10.0.1.1"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8:1::1"


def ct_pipeline(**ct: Any) -> Pipeline:
    return Pipeline("ct", ports=["a", "b", "out"], inputs={"a": "parse", "b": "parse"},
                    stages=[Parse("parse", next="ct"), Conntrack("ct", next="fwd", **ct),
                            Forward("fwd", port="out", keep_src_mac=True)])


class Session:
    """A running dataplane: send packets, read the flow table."""

    def __init__(self, dp: Dataplane) -> None:
        self.dp = dp
        self.n = 0
        self.sent: list[bytes] = []
        self.result: Result | None = None

    def send(self, port: str, pkts: list[Packet], queue: int = 0, settle: bool = True) -> None:
        got = self.dp.port(port).inject(pkts, queue=queue)
        assert got == len(pkts)
        self.n += got
        self.sent += [bytes(p) for p in pkts]
        if settle:
            _settle(self.dp, self.n)

    def settle(self) -> None:
        _settle(self.dp, self.n)

    def flows(self) -> np.ndarray:
        return ft.flows(self.dp, "ct")

    def count(self) -> int:
        return ft.count(self.dp, "ct")

    def expire(self, max_scan: int = 0) -> int:
        return ft.expire(self.dp, "ct", max_scan)

    def ct(self) -> dict[str, Any]:
        return self.dp.stats().stages()["ct"]


@contextmanager
def session(ring_name: Any, workers: int = 1, pl: Pipeline | None = None,
            **ct: Any) -> Iterator[Session]:
    """Run ``pl`` (default ct_pipeline(**ct)); on the way out stop, capture, check the
    books and the pool."""
    pl = pl or ct_pipeline(**ct)
    devs = {p: ring_name(workers) for p in pl.ports}
    with Dataplane(pl, ports=devs, workers=workers) as dp:
        s = Session(dp)
        dp.start()
        yield s
        dp.stop()
        st = dp.stats()
        out = {}
        for p in pl.ports:
            pending = dp.port(p).pending()
            out[p] = dp.port(p).capture(count=pending, timeout=1)
            assert dp.port(p).pending(tx=False) == 0, f"port {p}: rx ring not drained"
        assert dp.pool.in_use() == 0, f"{dp.pool.in_use()} mbufs leaked"
        s.result = Result(out, st, {}, s.n)
        check_accounting(s.result)


def udp(i: int, src: str = CLIENT, dst: str = SERVER, sport: int = 1234, dport: int = 53,
        pad: int = 0) -> Packet:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return eth() / ip / UDP(sport=sport, dport=dport) / tag(i) / (b"x" * pad)


def tcp(i: int, flags: str, src: str = CLIENT, dst: str = SERVER, sport: int = 40000,
        dport: int = 80) -> Packet:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return eth() / ip / TCP(sport=sport, dport=dport, flags=flags) / tag(i)


def one(f: np.ndarray) -> np.void:
    assert len(f) == 1, f"want one flow, have {len(f)}:\n{f}"
    return f[0]


def nbytes(pkts: list[Packet]) -> int:
    return sum(len(bytes(p)) for p in pkts)


# -- both directions, one entry --------------------------------------------------------
def test_udp_both_directions_one_flow(ring_name):
    orig = [udp(0), udp(1, pad=100), udp(2)]
    reply = [udp(3, SERVER, CLIENT, 53, 1234, pad=300), udp(4, SERVER, CLIENT, 53, 1234)]
    with session(ring_name) as s:
        s.send("a", orig[:1])
        f = one(s.flows())
        assert ft.state_names(s.flows()) == ["new"]
        s.send("a", orig[1:])
        s.send("b", reply)
        s.send("a", [udp(5)])
        f = one(s.flows())
        assert (f["family"], f["proto"]) == (4, 17)
        assert ft.addresses(s.flows(), "src") == [CLIENT]
        assert ft.addresses(s.flows(), "dst") == [SERVER]
        assert (f["sport"], f["dport"]) == (1234, 53)
        assert (f["packets_orig"], f["packets_reply"]) == (4, 2)
        assert f["bytes_orig"] == nbytes(orig + [udp(5)])
        assert f["bytes_reply"] == nbytes(reply)
        assert f["state"] == lib.PD_CT_ESTABLISHED
        assert ft.state_names(s.flows()) == ["established"]
        assert s.count() == 1
        ct = s.ct()
        assert ct["created"] == 1 and ct["in"] == 6 and ct["not_ip"] == 0
    assert sorted(pid(p) for p in s.result.out["out"]) == [0, 1, 2, 3, 4, 5]
    assert s.result.st.drops() == {}


@pytest.mark.parametrize("client, server, cport, sport", [
    ("10.0.1.200", "10.0.0.1", 5000, 80),    # the client is the higher end of the key
    ("10.0.0.7", "10.0.0.7", 2000, 1000),    # same address: the ports decide
    ("10.0.0.7", "10.0.0.7", 1000, 2000),
], ids=["client-high", "same-addr-port-high", "same-addr-port-low"])
def test_original_direction_is_the_first_packet(ring_name, client, server, cport, sport):
    with session(ring_name) as s:
        s.send("a", [udp(0, client, server, cport, sport)])
        s.send("b", [udp(1, server, client, sport, cport), udp(2, server, client, sport, cport)])
        f = one(s.flows())
        assert ft.addresses(s.flows(), "src") == [client]
        assert ft.addresses(s.flows(), "dst") == [server]
        assert (f["sport"], f["dport"]) == (cport, sport)
        assert (f["packets_orig"], f["packets_reply"]) == (1, 2)


def test_distinct_tuples_are_distinct_flows(ring_name):
    pkts = [udp(0), udp(1, sport=1235), udp(2, dport=54), udp(3, dst="10.0.1.2"),
            tcp(4, "S"), udp(5, CLIENT6, SERVER6)]
    with session(ring_name) as s:
        s.send("a", pkts)
        assert s.count() == 6
        assert s.ct()["created"] == 6
        f = s.flows()
        assert sorted(f["index"].tolist()) == sorted(set(f["index"].tolist()))
        assert (f["packets_orig"] == 1).all() and (f["packets_reply"] == 0).all()


# -- TCP states ------------------------------------------------------------------------------
def test_tcp_states(ring_name):
    def back(i: int, flags: str) -> Packet:
        return tcp(i, flags, SERVER, CLIENT, 80, 40000)

    with session(ring_name) as s:
        s.send("a", [tcp(0, "S")])
        assert ft.state_names(s.flows()) == ["new"]
        s.send("a", [tcp(1, "S")])                       # a retransmitted SYN
        assert ft.state_names(s.flows()) == ["new"]
        s.send("b", [back(2, "SA")])
        assert ft.state_names(s.flows()) == ["established"]
        s.send("a", [tcp(3, "A"), tcp(4, "PA")])
        s.send("b", [back(5, "A")])
        assert ft.state_names(s.flows()) == ["established"]
        s.send("a", [tcp(6, "FA")])
        assert ft.state_names(s.flows()) == ["closing"]
        s.send("b", [back(7, "FA")])
        s.send("a", [tcp(8, "A")])                       # closing does not go back
        f = one(s.flows())
        assert ft.state_names(s.flows()) == ["closing"]
        assert (f["packets_orig"], f["packets_reply"]) == (6, 3)


@pytest.mark.parametrize("first, then, want", [
    ("S", ("b", "R"), "closing"),       # refused: RST from the server
    ("S", ("a", "R"), "closing"),
    ("R", None, "closing"),             # a lone RST makes a closing flow
    ("FA", None, "closing"),
    ("A", ("b", "A"), "established"),   # mid-stream pickup: one packet each way
], ids=["rst-reply", "rst-orig", "lone-rst", "lone-fin", "pickup"])
def test_tcp_close_and_pickup(ring_name, first, then, want):
    with session(ring_name) as s:
        s.send("a", [tcp(0, first)])
        if then:
            port, flags = then
            pkt = tcp(1, flags) if port == "a" else tcp(1, flags, SERVER, CLIENT, 80, 40000)
            s.send(port, [pkt])
        assert ft.state_names(s.flows()) == [want]


# -- IPv6, ICMP ------------------------------------------------------------------------------
def test_ipv6_both_directions(ring_name):
    with session(ring_name) as s:
        s.send("a", [udp(0, CLIENT6, SERVER6, 5353, 53), tcp(1, "S", CLIENT6, SERVER6)])
        s.send("b", [udp(2, SERVER6, CLIENT6, 53, 5353), tcp(3, "SA", SERVER6, CLIENT6, 80, 40000),
                     udp(4, SERVER6, CLIENT6, 53, 5353)])
        f = s.flows()
        assert len(f) == 2 and (f["family"] == 6).all()
        by_proto = {int(r["proto"]): r for r in f}
        u, t = by_proto[17], by_proto[6]
        assert (u["sport"], u["dport"], u["packets_orig"], u["packets_reply"]) == (5353, 53, 1, 2)
        assert (t["sport"], t["dport"], t["packets_orig"], t["packets_reply"]) == (40000, 80, 1, 1)
        assert ft.addresses(f, "src") == [CLIENT6, CLIENT6]
        assert ft.addresses(f, "dst") == [SERVER6, SERVER6]
        assert ft.state_names(f) == ["established", "established"]


def test_icmp_echo_uses_the_id(ring_name):
    req = [eth() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=7, seq=i) / tag(i)
           for i in range(3)]
    rep = [eth() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=7, seq=i) / tag(10 + i)
           for i in range(2)]
    other_id = [eth() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=8) / tag(20)]
    req6 = [eth() / IPv6(src=CLIENT6, dst=SERVER6) / ICMPv6EchoRequest(id=9) / tag(30)]
    rep6 = [eth() / IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6EchoReply(id=9) / tag(31)]
    unreach = [eth() / IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / tag(40)]
    with session(ring_name) as s:
        s.send("a", req + other_id + req6)
        s.send("b", rep + rep6 + unreach)
        f = s.flows()
        assert len(f) == 4
        key = {(int(r["family"]), int(r["sport"]), int(r["dport"])):
               (int(r["packets_orig"]), int(r["packets_reply"])) for r in f}
        assert key == {(4, 7, 7): (3, 2), (4, 8, 8): (1, 0), (6, 9, 9): (1, 1),
                       (4, 0, 0): (1, 0)}  # an error has no id: ports 0, its own flow
    assert len(s.result.out["out"]) == 9


def test_non_ip_passes_unmarked(ring_name):
    with session(ring_name) as s:
        s.send("a", [arp(0), udp(1), arp(2)])
        assert s.count() == 1
        assert s.ct()["not_ip"] == 2
    assert sorted(pid(p) for p in s.result.out["out"]) == [0, 1, 2]


# -- capacity ------------------------------------------------------------------------------
def test_table_full_drops_new_flows_only(ring_name):
    flows4 = [udp(i, sport=2000 + i) for i in range(4)]
    extra = [udp(10 + i, sport=3000 + i) for i in range(3)]
    with session(ring_name, capacity=4) as s:
        s.send("a", flows4)
        assert s.count() == 4
        s.send("a", extra)
        assert s.count() == 4
        assert s.dp.stats().drops() == {"ct/table-full": 3}
        # the existing flows still pass, both ways, and keep counting
        s.send("a", [udp(20 + i, sport=2000 + i) for i in range(4)])
        s.send("b", [udp(30 + i, SERVER, CLIENT, 53, 2000 + i) for i in range(4)])
        f = s.flows()
        assert (f["packets_orig"] == 2).all() and (f["packets_reply"] == 1).all()
        assert ft.state_names(f) == ["established"] * 4
        assert s.ct()["created"] == 4
    ids = sorted(pid(p) for p in s.result.out["out"])
    assert ids == [0, 1, 2, 3, 20, 21, 22, 23, 30, 31, 32, 33]
    assert s.result.st.drops() == {"ct/table-full": 3}
    assert "table-full" in stage_drops("conntrack")


# -- ageing ----------------------------------------------------------------------------------
def test_expiry_per_state(ring_name):
    icmp = eth() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=1) / tag(3)
    with session(ring_name, timeouts={"udp": 0.2, "icmp": 0.2, "tcp_other": 0.2,
                                      "tcp_established": 60}) as s:
        s.send("a", [udp(0), tcp(1, "S"), tcp(2, "S", sport=40001), icmp,
                     tcp(6, "S", sport=40002)])
        s.send("b", [tcp(4, "SA", SERVER, CLIENT, 80, 40000),
                     tcp(7, "SA", SERVER, CLIENT, 80, 40002)])
        s.send("a", [tcp(8, "A")])                      # 40000 established: 60 s
        assert s.count() == 5
        assert s.expire() == 0                          # nothing idle yet
        time.sleep(0.4)
        # udp, icmp, the SYN never answered, and the answered SYN the client
        # never acknowledged (SYN_RECV takes tcp_other, not the established 60 s)
        assert s.expire() == 4
        f = one(s.flows())
        assert (f["proto"], f["sport"]) == (6, 40000)
        assert s.count() == 1
        assert s.expire() == 0
        # a new packet of an expired flow starts a fresh one
        s.send("a", [udp(5)])
        f = s.flows()
        u = f[f["proto"] == 17]
        assert len(u) == 1 and u["packets_orig"][0] == 1 and u["packets_reply"][0] == 0
        assert s.ct()["created"] == 6


def test_expiry_frees_capacity(ring_name):
    with session(ring_name, capacity=2, timeouts={"udp": 0.1}) as s:
        s.send("a", [udp(0, sport=1), udp(1, sport=2), udp(2, sport=3)])
        assert s.dp.stats().drops() == {"ct/table-full": 1}
        time.sleep(0.25)
        assert s.expire() == 2
        assert s.count() == 0
        s.send("a", [udp(3, sport=3), udp(4, sport=4)])  # the slots are free on return
        assert s.count() == 2
        assert s.dp.stats().drops() == {"ct/table-full": 1}
    assert sorted(pid(p) for p in s.result.out["out"]) == [0, 1, 3, 4]


def test_expire_from_another_thread(ring_name):
    """A thread the EAL does not know gets an lcore id for rte_hash's slot caches."""
    with session(ring_name, capacity=8, timeouts={"udp": 0.05}) as s:
        s.send("a", [udp(i, sport=7000 + i) for i in range(8)])
        time.sleep(0.15)
        got: list[int] = []
        # the second call finds the thread registered
        t = threading.Thread(target=lambda: got.extend([s.expire(), s.expire()]))
        t.start()
        t.join()
        assert got == [8, 0] and s.count() == 0
        s.send("a", [udp(10 + i, sport=8000 + i) for i in range(8)])
        assert s.count() == 8 and s.dp.stats().drops() == {}


def test_expire_in_slices(ring_name):
    with session(ring_name, capacity=64, timeouts={"udp": 0.1}) as s:
        s.send("a", [udp(i, sport=5000 + i) for i in range(20)])
        time.sleep(0.25)
        total, calls = 0, 0
        while total < 20 and calls < 200:
            got = s.expire(max_scan=100)
            assert 0 <= got <= 20
            total += got
            calls += 1
        assert total == 20 and s.count() == 0
        assert s.expire() == 0


def test_idle_flow_is_kept_while_traffic_flows(ring_name):
    with session(ring_name, timeouts={"udp": 0.3}) as s:
        for i in range(4):
            s.send("a", [udp(i)])
            time.sleep(0.1)
            assert s.expire() == 0
        f = one(s.flows())
        assert f["packets_orig"] == 4 and f["idle_ms"] < 300 <= f["age_ms"]


# -- numpy dump ------------------------------------------------------------------------------
def test_dump_is_numpy_with_the_c_layout(ring_name):
    with session(ring_name) as s:
        s.send("a", [udp(i, sport=6000 + i) for i in range(50)])
        s.send("b", [udp(100 + i, SERVER, CLIENT, 53, 6000 + i) for i in range(0, 50, 2)])
        f = s.flows()
        assert f.dtype == ft.FLOW_DTYPE and f.dtype.itemsize == ffi.sizeof("struct pd_flow_rec")
        for name in ("packets_orig", "bytes_reply", "age_ms", "idle_ms", "tag"):
            assert f.dtype.fields[name][1] == ffi.offsetof("struct pd_flow_rec", name)
        assert len(f) == 50 and f["packets_orig"].sum() == 50 and f["packets_reply"].sum() == 25
        assert sorted(f["sport"].tolist()) == list(range(6000, 6050))
        assert (f["tag"] == 0).all() and (f["age_ms"] >= f["idle_ms"]).all()
        assert (f["age_ms"] < 10000).all()
        est = f[f["packets_reply"] > 0]
        assert sorted(est["sport"].tolist()) == list(range(6000, 6050, 2))
        assert set(ft.state_names(est)) == {"established"}
        assert f["src"].shape == (50, 16)
        with pytest.raises(InvalidArgument, match="not a conntrack"):
            ft.flows(s.dp, "parse")


# -- two workers: the two directions on different lcores --------------------------------------
def test_two_workers_directions_on_different_workers(ring_name):
    """Queue 0 goes to worker 0, queue 1 to worker 1: each flow's orig and reply are
    counted by different workers, and both directions race to create the flow."""
    n = 300
    orig = [udp(i, sport=10000 + i) for i in range(n)]
    reply = [udp(1000 + i, SERVER, CLIENT, 53, 10000 + i) for i in range(n)]
    with session(ring_name, workers=2) as s:
        s.send("a", orig, queue=0, settle=False)
        s.send("b", reply, queue=1, settle=False)
        s.settle()
        f = s.flows()
        assert len(f) == n == s.count()
        ct_in = s.dp.counter_names.index("stage/ct/in")
        assert (s.dp.counters()[:, ct_in] > 0).all(), "both workers saw packets"
        assert (f["packets_orig"] + f["packets_reply"] == 2).all()
        assert s.ct()["created"] == n
        assert f["bytes_orig"].sum() + f["bytes_reply"].sum() == nbytes(orig + reply)
        s.send("a", orig[:10], queue=1)                 # orig now through worker 1
        f = s.flows()
        assert (f["packets_orig"] + f["packets_reply"]).sum() == 2 * n + 10


def test_churn_with_expiry_under_load(ring_name):
    """Template traffic creates flows over 4000 source ports on worker 0, replies come in
    on worker 1, and the control thread expires flows every few ms: the table never
    exceeds its capacity, holds no flow twice, and every packet is accounted for."""
    cap = 1000
    src = Source([eth() / IP(src=CLIENT, dst=SERVER) / UDP(sport=1, dport=53) / tag(0)],
                 vary=[Vary("UDP.sport", 1, 4000, random=True)], rate_pps=200000)
    pl = Pipeline("churn", ports=["a", "b"], inputs={"a": "parse", "b": "parse"},
                  stages=[Parse("parse", next="ct"),
                          Conntrack("ct", next="sink", capacity=cap, timeouts={"udp": 0.02}),
                          Drop("sink")])
    with Dataplane(pl, ports={"a": ring_name(2), "b": ring_name(2)}, workers=2,
                   sources={"a": src}) as dp:
        dp.start()
        rng = np.random.default_rng(1)
        expired, injected = 0, 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            sports = rng.integers(1, 4001, 64)
            injected += dp.port("b").inject(
                [udp(1, SERVER, CLIENT, 53, int(p)) for p in sports], queue=1)
            expired += ft.expire(dp, "ct")
            n = ft.count(dp, "ct")
            assert 0 <= n <= cap
            f = ft.flows(dp, "ct")
            # the client port: sport if the client spoke first, dport if a reply did
            client = np.where(f["dport"] == 53, f["sport"], f["dport"])
            assert len(f) <= cap and len(set(client.tolist())) == len(f)
            time.sleep(0.003)
        dp.stop()
        st = dp.stats()
        ct = st.stages()["ct"]
        assert expired > cap and ct["created"] > cap
        assert st.balanced() and st.tx == 0, st.summary()
        assert st.rx == ct["in"] and injected > 0
        assert ct["drops"]["table-full"] > 0
        f = ft.flows(dp, "ct")
        assert (f["packets_orig"] >= 1).all()
        time.sleep(0.05)
        assert ft.expire(dp, "ct") == len(f) and ft.count(dp, "ct") == 0
        assert len(ft.flows(dp, "ct")) == 0
        assert dp.port("b").pending(tx=False) == 0
        assert dp.pool.in_use() == 0, f"{dp.pool.in_use()} mbufs leaked"


# -- confirm mode -----------------------------------------------------------------------------
def test_confirm_mode_only_looks_up(ring_name):
    with session(ring_name, mode="confirm") as s:
        s.send("a", [udp(0), udp(1), tcp(2, "S")])
        s.send("b", [udp(3, SERVER, CLIENT, 53, 1234)])
        assert s.count() == 0 and len(s.flows()) == 0
        ct = s.ct()
        assert ct["no_flow"] == 4 and ct["created"] == 0
    assert len(s.result.out["out"]) == 4


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, key", [
    ({"capacity": 0}, "capacity"),
    ({"capacity": "many"}, "capacity"),
    ({"capacity": True}, "capacity"),
    ({"capacity": (1 << 24) + 1}, "capacity"),
    ({"mode": "sometimes"}, "mode"),
    ({"timeouts": 30}, "timeouts"),
    ({"timeouts": {"tcp": 30}}, "tcp"),
    ({"timeouts": {"udp": 0}}, "udp"),
    ({"timeouts": {"icmp": "10"}}, "icmp"),
    ({"timeouts": {"udp": True}}, "udp"),
])
def test_config_errors_name_the_key(kw, key):
    with pytest.raises(ConfigError) as e:
        ct_pipeline(**kw)
    assert e.value.key == key


def test_yaml(ring_name):
    text = """
name: fw
ports: [a, b, out]
inputs: {a: parse, b: parse}
stages:
  - {name: parse, type: parse, next: ct}
  - name: ct
    type: conntrack
    next: fwd
    capacity: 1000
    timeouts:
      udp: 5
      tcp_established: 3600
  - {name: fwd, type: forward, port: out}
"""
    pl = Pipeline.loads(text)
    ct = pl.stage("ct")
    assert isinstance(ct, Conntrack) and ct.capacity == 1000 and ct.mode == "auto"
    assert ct.timeouts_ms() == [3600000, 30000, 5000, 10000]
    assert Pipeline.loads(pl.to_yaml()) == pl
    bad = text.replace("      udp: 5", "      udp: 5\n      sctp: 5")
    with pytest.raises(ConfigError, match=r"<string>:13: .*no key 'sctp'"):
        Pipeline.loads(bad)


# -- confirm mode behind a policy stage ------------------------------------------------------
def test_policy_confirms_flows(ring_name):
    """conntrack(confirm) -> policy: allowed new flows are created with the rule id as tag,
    replies pass as part of their flow, denied packets make no flow, and a full table
    drops new flows in the policy stage."""
    policy = pytest.importorskip("pydp.acl")
    from pydp.stages import Policy
    allow_dns = policy.AclRule(id=5, priority=1, proto=17, dst="10.0.1.0/24", dport=53,
                               action="allow")
    pl = Pipeline("fw", ports=["a", "b", "out"], inputs={"a": "parse", "b": "parse"},
                  stages=[Parse("parse", next="ct"),
                          Conntrack("ct", next="pol", mode="confirm", capacity=2),
                          Policy("pol", next="fwd", conntrack="ct").use([allow_dns]),
                          Forward("fwd", port="out", keep_src_mac=True)])
    with session(ring_name, pl=pl) as s:
        s.send("a", [udp(0), udp(1, dport=80)])        # allowed; denied by default
        s.send("b", [udp(2, SERVER, CLIENT, 53, 1234)])  # the reply: no rule allows it
        f = one(s.flows())
        assert (f["tag"], f["packets_orig"], f["packets_reply"]) == (5, 1, 1)
        assert ft.state_names(s.flows()) == ["established"]
        s.send("a", [udp(3, sport=1), udp(4, sport=2)])  # the second one finds no room
        assert s.count() == 2
        assert s.ct()["created"] == 2 and s.ct()["no_flow"] == 4
    assert sorted(pid(p) for p in s.result.out["out"]) == [0, 2, 3]
    drops = s.result.st.drops()
    assert drops.pop("pol/flow-table-full") == 1
    assert sum(drops.values()) == 1 and all(k.startswith("pol/") for k in drops)
