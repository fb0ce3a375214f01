"""Runtime: ports of every virtual kind, hotplug, queues, mbuf accounting, sources."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

import pydp
from pydp import Dataplane, Pipeline, Port, Source, Vary
from pydp.mempool import Pool
from pydp.stages import Forward, Parse

FWD = Pipeline("fwd", ports=["in", "out"], inputs={"in": "parse"},
               stages=[Parse("parse", next="fwd"), Forward("fwd", port="out")])


def udp(i: int, **kw) -> Ether:
    return (Ether(dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.1.1", **kw)
            / UDP(sport=1000 + i, dport=80) / Raw(b"id=%06d" % i))


def ids(pkts) -> list[int]:
    return [int(bytes(p[Raw].load)[3:9]) for p in pkts]


def test_eal_reports_memory_mode(eal):
    assert eal.memory in ("hugepages", "no-huge (4 KiB pages)")
    assert eal.main_lcore == 0 and len(eal.workers) >= 1
    assert pydp.eal.init() is eal  # once per process


def test_ring_forward_and_pool_back_to_full(ring_name):
    pkts = [udp(i) for i in range(500)]
    with Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        assert dp.port("in").inject(pkts) == 500
        out = dp.port("out").capture(count=500, timeout=5)
        dp.stop()
        assert sorted(ids(out)) == list(range(500))
        st = dp.stats()
        assert st.rx == 500 and st.tx == 500 and st.dropped == 0 and st.balanced()
        # every mbuf is back once the pipeline stopped and the rings are drained
        assert dp.pool.in_use() == 0, "mbuf leak"


def test_pool_full_after_drops_and_mirror(ring_name):
    from pydp.stages import Mirror
    pl = Pipeline("m", ports=["in", "out", "tap"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="mir"), Mirror("mir", port="tap", next="fwd"),
                          Forward("fwd", port="out")])
    bad = [Ether() / IP(ihl=3) / UDP() for _ in range(50)]
    with Dataplane(pl, ports={"in": ring_name(), "out": ring_name(), "tap": ring_name()}) as dp:
        dp.start()
        dp.port("in").inject([udp(i) for i in range(200)] + bad)
        assert dp.wait_rx(250)
        assert len(dp.port("out").capture(count=200)) == 200
        assert len(dp.port("tap").capture(count=200)) == 200
        dp.stop()
        st = dp.stats()
        assert st.drops() == {"parse/bad-ipv4-header-length": 50}
        assert st.copies == 200 and st.balanced()
        assert dp.pool.in_use() == 0


def test_undrained_ring_is_freed_on_close(ring_name):
    """Packets left in a ring port when it closes go back to the pool."""
    dp = Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()})
    pool_ptr = dp.pool
    dp.start()
    dp.port("in").inject([udp(i) for i in range(100)])
    assert dp.wait_rx(100)
    dp.stop()
    assert pool_ptr.in_use() == 100  # sitting in the out port's tx ring
    for p in dp._ports.values():
        p.close()
    assert pool_ptr.in_use() == 0
    dp.close()


def test_multi_queue_two_workers(ring_name, eal):
    if len(eal.workers) < 2:
        pytest.skip("needs two worker lcores")
    with Dataplane(FWD, ports={"in": ring_name(2), "out": ring_name(2)}, workers=2) as dp:
        assert dp.port("in").info().max_rxq == 2
        dp.start()
        dp.port("in").inject([udp(i) for i in range(300)], queue=0)
        dp.port("in").inject([udp(i) for i in range(300, 600)], queue=1)
        out = dp.port("out").capture(count=600, timeout=5)
        dp.stop()
        assert sorted(ids(out)) == list(range(600))
        per_worker = dp.counters()[:, dp.counter_names.index("port/in/rx_packets")]
        assert list(per_worker) == [300, 300]  # each worker polled its own queue
        # each worker transmitted on its own tx queue
        assert len(dp.port("out").capture(queue=0, timeout=0.1)) == 0


def test_too_many_workers_for_port_queues(ring_name, eal):
    if len(eal.workers) < 2:
        pytest.skip("needs two worker lcores")
    with pytest.raises(pydp.InvalidArgument, match="tx queue"):
        Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()}, workers=2)


def test_hotplug_add_remove_while_running(ring_name, vdev_name):
    """A vdev is added and removed while a pipeline runs on other ports."""
    with Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        name = vdev_name("net_null")
        extra = Port(name)
        assert extra.info().driver == "net_null"
        extra.close()
        with pytest.raises(pydp.NotFound):
            extra.info()
        again = Port(name)  # the name is free again after removal
        again.close()
        dp.port("in").inject([udp(i) for i in range(10)])
        assert len(dp.port("out").capture(count=10)) == 10


def test_port_kinds(eal, vdev_name, tmp_path):
    """null, ring, pcap, tap and memif all open from devargs and close cleanly."""
    wrpcap(str(tmp_path / "in.pcap"), [udp(i) for i in range(3)])
    kinds = {
        "net_null": vdev_name("net_null"),
        "net_ring": vdev_name("net_ring"),
        "net_pcap": f"{vdev_name('net_pcap')},rx_pcap={tmp_path / 'in.pcap'},"
                    f"tx_pcap={tmp_path / 'out.pcap'}",
        "net_tap": f"{vdev_name('net_tap')},iface=pdtap{time.time_ns() % 10000}",
        "net_memif": f"{vdev_name('net_memif')},role=server,"
                     f"socket=/tmp/pydp-memif-{time.time_ns()}.sock",
    }
    for driver, devargs in kinds.items():
        with Port(devargs) as p:
            assert p.info().driver == driver, devargs


def test_af_packet_port_on_veth(eal, vdev_name):
    a, b = f"pdv{time.time_ns() % 100000}", None
    b = a + "p"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        subprocess.run(["ip", "link", "set", a, "up"], check=True)
        subprocess.run(["ip", "link", "set", b, "up"], check=True)
        with Port(f"{vdev_name('net_af_packet')},iface={a}") as p:
            assert p.info().driver == "net_af_packet"
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


@pytest.mark.parametrize("devargs,err", [
    ("net_bogus0", pydp.InvalidArgument),
    ("", pydp.InvalidArgument),
    ("not a devarg", pydp.InvalidArgument),
    ("net_ring_x,queues=0", pydp.InvalidArgument),
    ("net_ring_y,color=blue", pydp.InvalidArgument),
])
def test_bad_devargs_raise_typed_errors(eal, devargs, err):
    with pytest.raises(err) as ei:
        Port(devargs)
    assert devargs.split(",")[0] in str(ei.value) or "devargs" in str(ei.value)


def test_missing_pcap_file_names_the_devargs(eal, vdev_name):
    d = f"{vdev_name('net_pcap')},rx_pcap=/nonexistent/x.pcap"
    with pytest.raises(pydp.PydpError, match="rx_pcap=/nonexistent"):
        Port(d)


def test_pcap_in_pcap_out(eal, vdev_name, tmp_path):
    pkts = [udp(i) for i in range(50)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    out = tmp_path / "out.pcap"
    ports = {"in": f"{vdev_name('net_pcap')},rx_pcap={tmp_path / 'in.pcap'}",
             "out": f"{vdev_name('net_pcap')},tx_pcap={out}"}
    with Dataplane(FWD, ports=ports) as dp:
        dp.start()
        assert dp.wait_rx(50)
        assert dp.wait_idle(idle=0.2, timeout=5)
        dp.stop()
        st = dp.stats()
        assert st.rx == 50 and st.tx == 50 and st.balanced()
    got = rdpcap(str(out))
    assert sorted(ids(got)) == list(range(50))


def test_inject_numpy_batch(ring_name):
    raw = [bytes(udp(i)) for i in range(64)]
    arr = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(64, len(raw[0]))
    with Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()}) as dp:
        dp.start()
        assert dp.port("in").inject(arr) == 64
        out = dp.port("out").capture(count=64)
        assert sorted(ids(out)) == list(range(64))


def test_counters_are_a_live_numpy_view(ring_name):
    with Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()}) as dp:
        view = dp.counters()
        assert view.dtype == np.uint64 and view.base is not None  # not a copy
        dp.start()
        dp.port("in").inject([udp(i) for i in range(7)])
        dp.port("out").capture(count=7)
        assert int(view[:, dp.counter_names.index("stage/parse/in")].sum()) == 7


def test_template_source_varies_fields_and_fixes_checksums(ring_name):
    tmpl = (Ether() / IP(src="10.0.0.1", dst="10.9.9.9") / TCP(sport=1, dport=443)
            / Raw(b"hello"))
    tmpl6 = Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=5, dport=53) / Raw(b"q")
    src = Source([tmpl, tmpl6], vary=[Vary("IP.src", "10.0.0.1", "10.0.0.4"),
                                      Vary("TCP.sport", 100, 101),
                                      Vary("IPv6.src", "fd00::1", "fd00::3")], count=12)
    with Dataplane(FWD, ports={"in": ring_name(), "out": ring_name()},
                   sources={"in": src}) as dp:
        dp.start()
        out = dp.port("out").capture(count=12, timeout=5)
        deadline = time.time() + 5
        while not dp.sources_done() and time.time() < deadline:
            time.sleep(0.01)
        dp.stop()
        assert dp.stats().rx == 12 and dp.stats().dropped == 0
    v4 = [p for p in out if IP in p]
    v6 = [p for p in out if IPv6 in p]
    assert [p[IP].src for p in v4] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4",
                                       "10.0.0.1", "10.0.0.2"]
    assert [p[TCP].sport for p in v4] == [100, 101, 100, 101, 100, 101]
    assert [p[IPv6].src for p in v6] == ["fd00::1", "fd00::2", "fd00::3"] * 2
    for p in v4:  # checksums recomputed in C match what scapy computes
        ref = Ether(bytes(p))
        del ref[IP].chksum, ref[TCP].chksum
        ref = Ether(bytes(ref))
        assert p[IP].chksum == ref[IP].chksum and p[TCP].chksum == ref[TCP].chksum
    for p in v6:
        ref = Ether(bytes(p))
        del ref[UDP].chksum
        assert p[UDP].chksum == Ether(bytes(ref))[UDP].chksum


def test_template_source_rate(ring_name):
    src = Source([udp(0)], count=0, rate_pps=2000)
    with Dataplane(FWD, ports={"in": ring_name(), "out": "net_null_rate0,no-rx=1"},
                   sources={"in": src}) as dp:
        dp.start()
        time.sleep(1.0)
        dp.stop()
        rx = dp.stats().rx
    assert 1200 <= rx <= 2800, rx


@pytest.mark.parametrize("kw,msg", [
    ({"templates": []}, "at least one"),
    ({"templates": [udp(0)], "vary": [Vary("IP.foo", 1, 2)]}, "IP.foo"),
    ({"templates": [udp(0)], "vary": [Vary("IP.ttl", 1, 300)]}, "does not fit"),
    ({"templates": [udp(0)], "vary": [Vary("TCP.sport", 1, 2)]}, "no template"),
    ({"templates": [udp(0)], "vary": [Vary("IP.src", "10.0.0.9", "10.0.0.1")]}, "above"),
])
def test_source_bad_input(eal, kw, msg):
    with pytest.raises(pydp.InvalidArgument, match=msg):
        Source(**kw)


def test_pool_standalone(eal):
    with Pool(1024) as p:
        assert p.size() == 1024 and p.in_use() == 0


def test_rss_configured_on_multi_queue_null_port(eal, vdev_name):
    """net_null advertises RSS: two rx queues, one per worker, both carry traffic."""
    if len(eal.workers) < 2:
        pytest.skip("needs two worker lcores")
    ports = {"in": vdev_name("net_null"), "out": f"{vdev_name('net_null')},no-rx=1"}
    with Dataplane(FWD, ports=ports, workers=2) as dp:
        assert dp.port("in").info().rss
        dp.start()
        time.sleep(0.5)
        dp.stop()
        rx = dp.counters()[:, dp.counter_names.index("port/in/rx_packets")]
        assert all(int(x) > 0 for x in rx), rx  # each worker polled its own queue
        st = dp.stats()
        assert st.balanced() and st.rx > 0
