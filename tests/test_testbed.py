"""Real traffic between two network-namespace hosts, through pydp on af_packet ports.

pdA (10.0.0.1, fd00::1) -- vethA-dp [l2bridge] vethB-dp -- pdB (10.0.0.2, fd00::2).
The root-side ends carry no address, so replies can only come back through
the dataplane (test_ping_needs_the_dataplane checks exactly that).
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pydp import Dataplane, InvalidArgument, PermissionDenied, Pipeline, testbed
from pydp.stats import Stats

L2BRIDGE = Path(__file__).resolve().parent.parent / "pipelines" / "l2bridge.yaml"

pytestmark = pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (ip)")

PY = sys.executable
HTTP_PORT = 8080
UDP_PORT = 9000


@pytest.fixture(scope="module")
def topo():
    """The two-host topology, torn down whatever happens."""
    t = testbed.up("two-host")
    try:
        yield t
    finally:
        testbed.down("two-host")


def _flush_neighbors(topo: testbed.Topology) -> None:
    # every test resolves ARP/ND afresh, so that too goes through the dataplane
    for ns in topo.hosts:
        testbed.exec_in(ns, ["ip", "neigh", "flush", "all"], timeout=5, check=True)


@pytest.fixture
def bridge(eal, topo, vdev_name):
    """A running l2bridge Dataplane between the two hosts."""
    _flush_neighbors(topo)
    dp = Dataplane(Pipeline.load(L2BRIDGE), ports=topo.devargs(vdev_name))
    try:
        dp.start()
        yield dp
    finally:
        dp.close()


def _stopped_stats(dp: Dataplane) -> Stats:
    dp.stop()
    return dp.stats()


def _assert_forwarded(st: Stats, each_way: int) -> None:
    """Both ports received and sent at least ``each_way``; nothing dropped, all accounted."""
    ports = st.ports()
    for p in ("a", "b"):
        assert ports[p]["rx_packets"] >= each_way, st.summary()
        assert ports[p]["tx_packets"] >= each_way, st.summary()
        assert ports[p]["errors"] == 0 and ports[p]["missed"] == 0, st.summary()
    assert st.drops() == {}, st.summary()
    assert st.balanced(), st.summary()


# -- the topology itself ------------------------------------------------------------------------
def test_topology_shape(topo):
    assert topo.hosts == ["pdA", "pdB"]
    assert topo.dp_ifaces == {"a": "vethA-dp", "b": "vethB-dp"}
    assert topo.addresses["pdA"] == ["10.0.0.1/24", "fd00::1/64"]
    assert topo.addr("pdB") == "10.0.0.2" and topo.addr("pdB", 6) == "fd00::2"
    assert topo.devargs() == {"a": "net_af_packet0,iface=vethA-dp,qpairs=1",
                              "b": "net_af_packet1,iface=vethB-dp,qpairs=1"}
    for iface in topo.dp_ifaces.values():
        sysfs = f"/sys/class/net/{iface}"
        # a veth's carrier comes up asynchronously after `ip link set up`
        deadline = time.monotonic() + 5
        while (open(f"{sysfs}/operstate").read().strip() != "up"
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert open(f"{sysfs}/operstate").read().strip() == "up"
        assert open(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6").read().strip() == "1"
    out = subprocess.run(["ip", "-br", "addr", "show", "vethA-dp"], capture_output=True,
                         text=True, timeout=5).stdout
    assert "10.0.0." not in out and "fe80" not in out
    text = topo.describe()
    assert "pdA" in text and "vethB-dp" in text and "pydp run pipelines/l2bridge.yaml" in text
    assert "--port a=net_af_packet0,iface=vethA-dp" in text


def test_unknown_topology_is_named():
    with pytest.raises(InvalidArgument, match="three-host"):
        testbed.up("three-host")
    with pytest.raises(InvalidArgument, match="three-host"):
        testbed.down("three-host")


def test_needs_root(monkeypatch):
    monkeypatch.setattr(testbed.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionDenied, match="root"):
        testbed.up("two-host")
    with pytest.raises(PermissionDenied, match="root"):
        testbed.down("two-host")


def test_devargs_with_factory(topo, vdev_name):
    d = topo.devargs(vdev_name, qpairs=1)
    assert d["a"].startswith("net_af_packet") and d["a"].endswith(",iface=vethA-dp,qpairs=1")
    assert d["a"].split(",")[0] != d["b"].split(",")[0]


# -- traffic -----------------------------------------------------------------------------------
def test_ping_needs_the_dataplane(eal, topo, vdev_name):
    _flush_neighbors(topo)
    got, out = testbed.ping("pdA", "10.0.0.2", count=2, interval=0.1, wait=0.4)
    assert got == 0, f"ping answered with no dataplane: the testbed leaks\n{out}"
    with Dataplane(Pipeline.load(L2BRIDGE),
                   ports=topo.devargs(vdev_name)) as dp:
        got, out = testbed.ping("pdA", "10.0.0.2", count=1, wait=0.4)
        assert got == 0, f"ping answered with the ports open but no worker running\n{out}"
        dp.start()
        got, out = testbed.ping("pdA", "10.0.0.2", count=2, interval=0.1)
        assert got == 2, out
        dp.stop()
        got, out = testbed.ping("pdA", "10.0.0.2", count=1, wait=0.4)
        assert got == 0, f"ping answered after the dataplane stopped\n{out}"


def test_ping(bridge):
    got, out = testbed.ping("pdA", "10.0.0.2", count=3)
    assert got == 3, out
    st = _stopped_stats(bridge)
    _assert_forwarded(st, 3)  # 3 echo requests a->b, 3 replies b->a (plus ARP)
    assert st.ports()["a"]["rx_packets"] >= 3 and st.ports()["b"]["tx_packets"] >= 3


def test_ping6(bridge):
    got, out = testbed.ping("pdA", "fd00::2", count=3)
    assert got == 3, out
    got, out = testbed.ping("pdB", "fd00::1", count=2)
    assert got == 2, out
    _assert_forwarded(_stopped_stats(bridge), 5)


UDP_ECHO = r"""
import socket, sys
n = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[3])))
s.settimeout(10)
print("ready", flush=True)
seen = set()
while len(seen) < n:
    data, peer = s.recvfrom(4096)
    seen.add(data)
    s.sendto(data, peer)
print("received", len(seen), flush=True)
"""

UDP_SEND = r"""
import socket, sys
dst, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
echoed = 0
for i in range(n):
    msg = b"%06d" % i + bytes(x & 0xFF for x in range(i * 7 % 1400))
    s.sendto(msg, (dst, port))
    try:
        if s.recvfrom(4096)[0] == msg:
            echoed += 1
    except socket.timeout:
        print("no echo for", i, file=sys.stderr)
print("echoed", echoed, flush=True)
"""


def _spawn_ready(ns: str, cmd: list[str], marker: str, timeout: float) -> subprocess.Popen:
    """Start a server in ``ns`` and wait until it prints a line containing ``marker``."""
    p = testbed.spawn_in(ns, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            line = p.stdout.readline()
            if marker in line:
                return p
            if not line:
                break
    _stop(p)
    raise AssertionError(f"{cmd[:3]} in {ns} did not get ready: {p.stderr.read()}")


def _stop(p: subprocess.Popen) -> str:
    if p.poll() is None:
        p.terminate()
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
    return (out or "") + (err or "")


def test_udp_echo(bridge):
    n = 200
    rx = _spawn_ready("pdB", [PY, "-c", UDP_ECHO, "10.0.0.2", str(n), str(UDP_PORT)],
                      "ready", timeout=10)
    try:
        p = testbed.exec_in("pdA", [PY, "-c", UDP_SEND, "10.0.0.2", str(n), str(UDP_PORT)],
                            timeout=20)
        assert p.returncode == 0, p.stderr
        assert f"echoed {n}" in p.stdout, p.stdout + p.stderr
        rx.wait(timeout=5)
        out = _stop(rx)
        assert rx.returncode == 0 and f"received {n}" in out, out
    finally:
        _stop(rx)
    _assert_forwarded(_stopped_stats(bridge), n)


FETCH = r"""
import hashlib, sys, urllib.request
data = urllib.request.urlopen(sys.argv[1], timeout=15).read()
print(len(data), hashlib.sha256(data).hexdigest())
"""


def test_tcp_http_download(bridge, tmp_path):
    blob = os.urandom(1 << 20)
    (tmp_path / "blob.bin").write_bytes(blob)
    srv = _spawn_ready("pdB", [PY, "-u", "-m", "http.server", str(HTTP_PORT), "--bind",
                               "10.0.0.2", "--directory", str(tmp_path)],
                       "Serving HTTP", timeout=10)
    try:
        t0 = time.monotonic()
        p = testbed.exec_in("pdA", [PY, "-c", FETCH, f"http://10.0.0.2:{HTTP_PORT}/blob.bin"],
                            timeout=25)
        took = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        size, digest = p.stdout.split()
        assert int(size) == len(blob)
        assert digest == hashlib.sha256(blob).hexdigest()
    finally:
        _stop(srv)
    st = _stopped_stats(bridge)
    segs = len(blob) // 1500
    _assert_forwarded(st, 10)
    ports = st.ports()
    assert ports["b"]["rx_packets"] >= segs and ports["a"]["tx_packets"] >= segs, st.summary()
    assert ports["b"]["rx_bytes"] >= len(blob), st.summary()
    assert took < 20, f"1 MiB took {took:.1f} s"
