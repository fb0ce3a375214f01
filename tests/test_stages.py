"""Stages as a user sees them: scapy packets in, scapy packets out, drops by reason.

This file covers forward, count, mirror, drop and numpy batch injection, and
holds the helpers that test_stage_parse.py and test_stage_l3route.py import.
Every packet carries a payload id (``id=N;``); what comes out is matched to
what went in by that id and compared byte for byte with the packet the test
expects (VPP test style). Every run ends with the accounting checks of
:func:`run`: rx == tx + dropped (+ mirror copies), per-port tx counters equal
what was captured, and no mbuf is left out of the pool.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from pydp import Dataplane, Pipeline, Stats
from pydp.stages import Count, Drop, Forward, L3Route, Mirror, NextHop, Parse, Route

SRC_MAC = "02:00:00:00:01:01"  # what test packets carry
DST_MAC = "02:00:00:00:01:02"
_ID_RE = re.compile(rb"id=(\d+);")


# -- helpers shared with the other test_stage_* files --------------------------------------
def tag(i: int) -> Raw:
    """The payload that identifies packet ``i``."""
    return Raw(b"id=%d;" % i)


def pid(pkt: Any) -> int | None:
    """The payload id of a packet (scapy or bytes), None if it has none."""
    m = _ID_RE.search(bytes(pkt))
    return int(m.group(1)) if m else None


def eth(**kw: Any) -> Ether:
    """An Ethernet header with fixed test MACs (no scapy ARP/route lookups)."""
    kw.setdefault("src", SRC_MAC)
    kw.setdefault("dst", DST_MAC)
    return Ether(**kw)


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def with_macs(pkt: Any, src: str | None = None, dst: str | None = None) -> bytes:
    """The frame's bytes with its Ethernet addresses replaced."""
    b = bytearray(bytes(pkt))
    if dst is not None:
        b[0:6] = mac_bytes(dst)
    if src is not None:
        b[6:12] = mac_bytes(src)
    return bytes(b)


def assert_same(got: Any, want: Any) -> None:
    """Byte equality, with both packets decoded in the failure message."""
    g, w = bytes(got), bytes(want)
    if g != w:
        raise AssertionError("packet differs:\n got: " + Ether(g).show2(dump=True)
                             + "\nwant: " + Ether(w).show2(dump=True)
                             + f"\n got: {g.hex()}\nwant: {w.hex()}")


@dataclass
class Result:
    """What a run left behind: packets per port, counters, port MACs."""

    out: dict[str, list[Ether]]
    st: Stats
    macs: dict[str, str]
    injected: int

    def ids(self, port: str) -> list[int | None]:
        """Payload ids of what left ``port``, in order."""
        return [pid(p) for p in self.out[port]]

    def by_id(self, port: str) -> dict[int | None, Ether]:
        return {pid(p): p for p in self.out[port]}

    def stage(self, name: str) -> dict[str, Any]:
        return self.st.stages()[name]


def assert_ipv4_cksum_ok(pkt: Ether) -> None:
    """The (first, outer) IPv4 header checksum of ``pkt`` is what scapy computes afresh."""
    fresh = pkt.copy()
    del fresh[IP].chksum
    assert Ether(bytes(fresh))[IP].chksum == pkt[IP].chksum, \
        f"IPv4 header checksum {pkt[IP].chksum:#x}"

def _settle(dp: Dataplane, n: int, timeout: float = 5.0) -> Stats:
    """Wait until ``n`` packets were received and every one has a verdict."""
    deadline = time.monotonic() + timeout
    while True:
        st = dp.stats()
        # drops() parses counter names exactly; st.dropped is checked later
        if st.rx >= n and st.rx + st.copies == st.tx + sum(st.drops().values()):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {timeout}s (want rx {n}):\n"
                                 + st.summary())
        time.sleep(0.002)


def run(pl: Pipeline, ring_name: Callable[..., str], inject: Mapping[str, Any],
        then: Callable[[Dataplane], Iterable[tuple[str, Any]]] | None = None,
        lengths: Iterable[int] | None = None) -> Result:
    """Run ``pl`` on fresh net_ring ports, inject, stop, capture and check accounting.

    ``inject``: port name -> packets (list or 2-D numpy array, ``lengths``
    for the latter). ``then(dp)`` runs after the first packets settled and
    yields more (port, packets) to inject (used to change tables mid-run).
    """
    devs = {p: ring_name() for p in pl.ports}
    with Dataplane(pl, ports=devs) as dp:
        macs = {p: dp.port(p).info().mac for p in pl.ports}
        dp.start()
        n = 0
        for port, pkts in inject.items():
            want = len(pkts)
            got = dp.port(port).inject(pkts, lengths=lengths)
            assert got == want, f"injected {got} of {want} on {port}"
            n += got
        _settle(dp, n)
        for port, pkts in (then(dp) if then else ()):
            n += dp.port(port).inject(pkts)
            _settle(dp, n)
        dp.stop()
        st = dp.stats()
        out = {}
        for p in pl.ports:
            pending = dp.port(p).pending()
            out[p] = dp.port(p).capture(count=pending, timeout=1)
            assert len(out[p]) == pending
            assert dp.port(p).pending(tx=False) == 0, f"port {p}: rx ring not drained"
        assert dp.pool.in_use() == 0, f"{dp.pool.in_use()} mbufs leaked"
    r = Result(out, st, macs, n)
    check_accounting(r)
    return r


def check_accounting(r: Result) -> None:
    """Every packet in has exactly one verdict; tx counters match the capture."""
    st = r.st
    assert st.rx == r.injected, st.summary()
    assert st.dropped == sum(st.drops().values()), st.summary()
    assert st.balanced(), st.summary()
    assert st.rx + st.copies == st.tx + st.dropped, st.summary()
    ports = st.ports()
    for p, pkts in r.out.items():
        assert ports[p]["tx_packets"] == len(pkts), f"port {p}: " + st.summary()
        assert ports[p]["tx_bytes"] == sum(len(bytes(x)) for x in pkts)
        assert ports[p]["drops"]["tx_full"] == 0


def edge_pipeline(**parse_kw: Any) -> Pipeline:
    """parse with its four edges each forwarded, MACs untouched, to its own port."""
    kw = {"next": "f_other", "ipv4": "f_v4", "ipv6": "f_v6", "arp": "f_arp",
          "other": "f_other"}
    kw.update(parse_kw)
    return Pipeline("edges", ports=["in", "v4", "v6", "arp", "other"], inputs={"in": "parse"},
                    stages=[Parse("parse", **kw),
                            Forward("f_v4", port="v4", keep_src_mac=True),
                            Forward("f_v6", port="v6", keep_src_mac=True),
                            Forward("f_arp", port="arp", keep_src_mac=True),
                            Forward("f_other", port="other", keep_src_mac=True)])


def v4(i: int, **ip: Any) -> Ether:
    ip.setdefault("src", "192.0.2.1")
    ip.setdefault("dst", "198.51.100.1")
    return eth() / IP(**ip) / UDP(sport=1024 + i, dport=4789) / tag(i)


def v6(i: int, **ip: Any) -> Ether:
    ip.setdefault("src", "2001:db8::1")
    ip.setdefault("dst", "2001:db8:1::1")
    return eth() / IPv6(**ip) / TCP(sport=1024 + i, dport=80) / tag(i)


def arp(i: int) -> Ether:
    return eth(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2",
                                              hwsrc=SRC_MAC) / tag(i)


def fwd_pipeline(**fwd: Any) -> Pipeline:
    fwd.setdefault("port", "out")
    return Pipeline("fwd", ports=["in", "out"], inputs={"in": "parse"},
                    stages=[Parse("parse", next="fwd"), Forward("fwd", **fwd)])


# -- forward -----------------------------------------------------------------------------
NEW_DST = "02:00:00:00:0d:0d"
NEW_SRC = "02:00:00:00:05:05"
MIXED = [v4(0), v6(1), arp(2), eth() / Dot1Q(vlan=7) / IP(dst="10.0.0.1") / UDP() / tag(3)]


@pytest.mark.parametrize("fwd, want_src, want_dst", [
    ({}, "port", None),
    ({"dst_mac": NEW_DST}, "port", NEW_DST),
    ({"src_mac": NEW_SRC}, NEW_SRC, None),
    ({"src_mac": NEW_SRC, "dst_mac": NEW_DST}, NEW_SRC, NEW_DST),
    ({"keep_src_mac": True}, None, None),
    ({"keep_src_mac": True, "dst_mac": NEW_DST}, None, NEW_DST),
], ids=["default", "dst", "src", "src+dst", "keep_src", "keep_src+dst"])
def test_forward_mac_rewrite(ring_name, fwd, want_src, want_dst):
    """src: the out port's MAC unless set or kept (None = unchanged); dst: only if set."""
    r = run(fwd_pipeline(**fwd), ring_name, {"in": MIXED})
    src = r.macs["out"] if want_src == "port" else want_src
    if want_src == "port":
        assert src != SRC_MAC  # the rewrite is visible
    assert r.ids("out") == [0, 1, 2, 3]
    for p_in, p_out in zip(MIXED, r.out["out"]):
        assert_same(p_out, with_macs(p_in, src=src, dst=want_dst))
    assert r.stage("fwd")["in"] == 4
    assert r.st.drops() == {}


def test_forward_without_parse_passes_anything(ring_name):
    """A bare forward (no parse) sends even malformed IPv4 on unchanged but for MACs."""
    bad = bytearray(bytes(v4(1)))
    bad[14] = 0x41  # IHL 1
    pkts = [v4(0), bytes(bad)]
    pl = Pipeline("bare", ports=["in", "out"], inputs={"in": "fwd"},
                  stages=[Forward("fwd", port="out", dst_mac=NEW_DST)])
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("out") == [0, 1]
    for p_in, p_out in zip(pkts, r.out["out"]):
        assert_same(p_out, with_macs(p_in, src=r.macs["out"], dst=NEW_DST))


# -- count -------------------------------------------------------------------------------
def test_count_packets_and_bytes(ring_name):
    good = [v4(0), v6(1), v4(2) / Raw(b"x" * 300), arp(3), v6(4) / Raw(b"y" * 1000)]
    bad = eth() / IP(chksum=0xbad) / UDP() / tag(9)  # dropped by parse before count
    pl = Pipeline("cnt", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="cnt"), Count("cnt", next="fwd"),
                          Forward("fwd", port="out", keep_src_mac=True)])
    r = run(pl, ring_name, {"in": good[:2] + [bad] + good[2:]})
    cnt = r.stage("cnt")
    assert cnt["packets"] == len(good) == cnt["in"]
    assert cnt["bytes"] == sum(len(bytes(p)) for p in good)
    assert r.ids("out") == [0, 1, 2, 3, 4]
    for p_in, p_out in zip(good, r.out["out"]):
        assert_same(p_out, p_in)
    assert r.st.drops() == {"parse/bad-ipv4-checksum": 1}


def test_count_on_one_parse_edge(ring_name):
    """A count on the ipv6 edge sees only IPv6; the other edges bypass it."""
    pkts = [v4(0), v6(1), v6(2), arp(3), v4(4)]
    pl = Pipeline("cnt6", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="fwd", ipv6="cnt"), Count("cnt", next="fwd"),
                          Forward("fwd", port="out", keep_src_mac=True)])
    r = run(pl, ring_name, {"in": pkts})
    assert r.stage("cnt")["packets"] == 2
    assert r.stage("cnt")["bytes"] == len(bytes(pkts[1])) + len(bytes(pkts[2]))
    assert sorted(r.ids("out")) == [0, 1, 2, 3, 4]


# -- mirror ------------------------------------------------------------------------------
def test_mirror_copy_is_the_packet_at_the_mirror_point(ring_name):
    """The copy is the packet as it reached the mirror; forward's rewrite does not touch it."""
    pkts = [v4(i) for i in range(3)] + [v6(3), arp(4), v4(5) / Raw(b"z" * 1400)]
    pl = Pipeline("mir", ports=["in", "out", "mon"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="mirror"),
                          Mirror("mirror", port="mon", next="fwd"),
                          Forward("fwd", port="out", src_mac=NEW_SRC, dst_mac=NEW_DST)])
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("mon") == r.ids("out") == [0, 1, 2, 3, 4, 5]
    for p_in, p_mon, p_out in zip(pkts, r.out["mon"], r.out["out"]):
        assert_same(p_mon, p_in)
        assert_same(p_out, with_macs(p_in, src=NEW_SRC, dst=NEW_DST))
    m = r.stage("mirror")
    assert m["copies"] == len(pkts) and m["copy_failed"] == 0
    assert r.st.copies == len(pkts)
    assert r.st.tx == 2 * len(pkts) == r.st.rx + r.st.copies


def test_mirror_before_route_keeps_ttl_and_counts_dropped_originals(ring_name):
    """Mirror ahead of l3route: copies show the TTL before decrement; originals that
    l3route drops were still mirrored, and the books balance with the copies."""
    pkts = [v4(0, dst="10.0.0.1", ttl=9), v4(1, dst="10.0.0.1", ttl=1),
            v4(2, dst="172.16.0.1")]
    pl = Pipeline("mirroute", ports=["in", "out", "mon"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="mirror"),
                          Mirror("mirror", port="mon", next="route"),
                          L3Route("route", nexthops=[NextHop("nh", "out", NEW_DST)],
                                  routes=[Route("10.0.0.0/8", "nh")])])
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("mon") == [0, 1, 2]
    for p_in, p_mon in zip(pkts, r.out["mon"]):
        assert_same(p_mon, p_in)
    assert r.ids("out") == [0]
    assert r.out["out"][0][IP].ttl == 8
    assert r.st.drops() == {"route/ttl-exceeded": 1, "route/no-route": 1}
    assert r.st.copies == 3
    assert r.st.rx + r.st.copies == r.st.tx + r.st.dropped == 6


def test_mirror_on_one_edge_only(ring_name):
    pkts = [v4(0), v6(1), arp(2)]
    pl = Pipeline("mir4", ports=["in", "out", "mon"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="fwd", ipv4="mirror"),
                          Mirror("mirror", port="mon", next="fwd"),
                          Forward("fwd", port="out", keep_src_mac=True)])
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("mon") == [0]
    assert sorted(r.ids("out")) == [0, 1, 2]
    assert r.st.copies == 1


# -- drop --------------------------------------------------------------------------------
def test_drop_stage_drops_everything(ring_name):
    pkts = [v4(0), v6(1), arp(2), eth(type=0x88B5) / tag(3)]
    pl = Pipeline("drop", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="sink"), Drop("sink")])
    r = run(pl, ring_name, {"in": pkts})
    assert r.out == {"in": [], "out": []}
    assert r.st.drops() == {"sink/drop-stage": 4}
    assert r.stage("sink")["in"] == 4
    assert r.st.dropped == 4


def test_drop_stage_named_drop(ring_name):
    """A stage named 'drop': its stage/drop/in counter is not a drop (was counted twice)."""
    pkts = [v4(0), v6(1), arp(2), eth(type=0x88B5) / tag(3)]
    pl = Pipeline("drop", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="drop"), Drop("drop")])
    r = run(pl, ring_name, {"in": pkts})
    assert r.st.drops() == {"drop/drop-stage": 4}
    assert r.st.dropped == 4


def test_drop_stage_on_parse_edges(ring_name):
    """Only IPv4 is forwarded: the other edges lead to a drop stage."""
    pkts = [v4(0), v6(1), arp(2), v4(3), eth(type=0x88B5) / tag(4)]
    pl = Pipeline("v4only", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="sink", ipv4="fwd"),
                          Forward("fwd", port="out", keep_src_mac=True), Drop("sink")])
    r = run(pl, ring_name, {"in": pkts})
    assert r.ids("out") == [0, 3]
    assert r.st.drops() == {"sink/drop-stage": 3}


# -- numpy batches -------------------------------------------------------------------------
def test_numpy_batch_fixed_length(ring_name):
    pkts = [v4(i) for i in range(10, 74)]  # same length: ids 10..73 have two digits
    arr = np.array([np.frombuffer(bytes(p), dtype=np.uint8) for p in pkts])
    assert arr.ndim == 2 and arr.dtype == np.uint8
    r = run(fwd_pipeline(keep_src_mac=True), ring_name, {"in": arr})
    assert r.ids("out") == list(range(10, 74))
    for p_in, p_out in zip(pkts, r.out["out"]):
        assert_same(p_out, p_in)


def test_numpy_batch_with_lengths(ring_name):
    """Rows longer than their packets: ``lengths`` cuts each row; trailing junk never leaves."""
    pkts = [v4(0), v6(1) / Raw(b"a" * 50), arp(2), v4(3) / Raw(b"b" * 200)]
    width = max(len(bytes(p)) for p in pkts) + 16
    arr = np.full((len(pkts), width), 0xEE, dtype=np.uint8)
    for i, p in enumerate(pkts):
        b = bytes(p)
        arr[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    r = run(fwd_pipeline(keep_src_mac=True), ring_name, {"in": arr},
            lengths=[len(bytes(p)) for p in pkts])
    assert r.ids("out") == [0, 1, 2, 3]
    for p_in, p_out in zip(pkts, r.out["out"]):
        assert_same(p_out, p_in)
