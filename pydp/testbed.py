"""Test hosts in network namespaces, wired to pydp through veth pairs.

The "two-host" topology puts two hosts in their own network namespaces and
leaves the other end of each host's veth in the root namespace, where pydp
opens it as an af_packet port::

    netns pdA                    root namespace                    netns pdB
    vethA 10.0.0.1/24  ==veth==  vethA-dp  [pydp]  vethB-dp  ==veth==  vethB 10.0.0.2/24
          fd00::1/64             (port a)          (port b)                fd00::2/64

The root-side ends have no address and IPv6 disabled, so the root kernel
sends nothing on them: every frame the hosts see came through the dataplane.
Checksum and segmentation offloads are off on all four ends (af_packet
would otherwise pass on frames with unfinished checksums or 64 KiB
super-frames)::

    from pydp import testbed
    topo = testbed.up()                       # idempotent
    with Dataplane(Pipeline.load("pipelines/l2bridge.yaml"), ports=topo.devargs()) as dp:
        dp.start()
        testbed.ping("pdA", "10.0.0.2")       # -> 3 replies
    testbed.down()

Everything here needs root (namespaces, links, sysctls).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgument, PermissionDenied, PydpError

AF_PACKET_DRIVER = "net_af_packet"
CMD_TIMEOUT = 10.0
OFFLOADS = ("tx", "rx", "gso", "tso", "gro")


@dataclass(frozen=True)
class _Host:
    ns: str
    iface: str
    dp_iface: str
    port: str
    addrs: tuple[str, ...]
    mac: str | None = None                        # the host interface's MAC
    neigh: tuple[tuple[str, str], ...] = ()       # static neighbours (addr, MAC)
    routes: tuple[tuple[str, str], ...] = ()      # (prefix, via)


def _lb_backend(i: int) -> _Host:
    return _Host(f"pdlbs{i}", f"pdlbs{i}0", f"pdlbs{i}1", f"be{i}", (f"10.77.1.{10 + i}/24",),
                 mac=f"02:77:00:00:01:{10 + i:02x}", neigh=(("10.77.1.1", "02:77:00:00:01:01"),),
                 routes=(("10.77.0.0/24", "10.77.1.1"),))


_TOPOLOGIES: dict[str, tuple[_Host, ...]] = {
    "two-host": (
        _Host("pdA", "vethA", "vethA-dp", "a", ("10.0.0.1/24", "fd00::1/64")),
        _Host("pdB", "vethB", "vethB-dp", "b", ("10.0.0.2/24", "fd00::2/64")),
    ),
    # pipelines/load-balancer.yaml: a client reaches the VIP 10.77.0.100 (a static
    # neighbour entry: no ARP), three backends answer through the dataplane
    # (their route back to the clients goes via 10.77.1.1, also static)
    "lb": (
        _Host("pdlbc", "pdlbc0", "pdlbc1", "clients", ("10.77.0.2/24",),
              mac="02:77:00:00:00:02", neigh=(("10.77.0.100", "02:77:00:00:00:01"),)),
        _lb_backend(1), _lb_backend(2), _lb_backend(3),
    ),
}
_PIPELINES = {"two-host": "l2bridge.yaml", "lb": "load-balancer.yaml"}


@dataclass
class Topology:
    """A topology that is up: its namespaces, the dataplane's interfaces, the addresses.

    ``hosts``: the hosts' network namespaces. ``dp_ifaces``: pipeline port
    name -> root-namespace interface for pydp. ``host_ifaces``: namespace ->
    its interface; ``host_ports``: namespace -> the port it hangs off.
    ``addresses``: namespace -> its addresses with prefix length
    (``["10.0.0.1/24", "fd00::1/64"]``).
    """

    name: str
    hosts: list[str]
    dp_ifaces: dict[str, str]
    addresses: dict[str, list[str]]
    host_ifaces: dict[str, str] = field(default_factory=dict)
    host_ports: dict[str, str] = field(default_factory=dict)

    def devargs(self, vdev_name_factory: Callable[[str], str] | None = None,
                qpairs: int = 1) -> dict[str, str]:
        """af_packet devargs per port: ``{"a": "net_af_packet0,iface=vethA-dp,qpairs=1"}``.

        ``vdev_name_factory(driver) -> name`` makes the vdev names (they must
        be unique within a process); by default ports are numbered 0, 1, ...
        """
        if qpairs < 1:
            raise InvalidArgument(f"qpairs: {qpairs} is below 1")
        out = {}
        for i, (port, iface) in enumerate(self.dp_ifaces.items()):
            vdev = (vdev_name_factory(AF_PACKET_DRIVER) if vdev_name_factory
                    else f"{AF_PACKET_DRIVER}{i}")
            out[port] = f"{vdev},iface={iface},qpairs={qpairs}"
        return out

    def addr(self, host: str, version: int = 4) -> str:
        """The IPv4 (``version=4``) or IPv6 address of ``host``, without prefix length."""
        for a in self.addresses.get(host, []):
            ip = ipaddress.ip_interface(a).ip
            if ip.version == version:
                return str(ip)
        raise InvalidArgument(f"topology '{self.name}': host '{host}' has no IPv{version} "
                              f"address (hosts: {', '.join(self.hosts)})")

    def describe(self) -> str:
        """A few lines: namespaces, interfaces, addresses and the ``pydp run`` arguments."""
        lines = [f"testbed {self.name}:"]
        for ns in self.hosts:
            port = self.host_ports.get(ns, "?")
            lines.append(f"  netns {ns:<4} {self.host_ifaces.get(ns, '?'):<6} "
                         f"{' '.join(self.addresses.get(ns, []))}   <-> root "
                         f"{self.dp_ifaces.get(port, '?')} (port {port})")
        ports = " ".join(f"--port {p}={d}" for p, d in self.devargs().items())
        lines.append(f"  run:  pydp run pipelines/{_PIPELINES.get(self.name, 'l2bridge.yaml')} "
                     f"{ports}")
        if self.name == "lb":
            lines.append("  try:  ip netns exec pdlbc curl -s http://10.77.0.100/   "
                         "(backends: python -m pydp.lb.httpd in pdlbs1..3)")
        elif self.hosts and len(self.hosts) > 1:
            lines.append(f"  try:  ip netns exec {self.hosts[0]} ping -c 3 "
                         f"{self.addr(self.hosts[1])}")
        lines.append(f"  down: pydp testbed down {self.name}")
        return "\n".join(lines)


# -- helpers ---------------------------------------------------------------------------
def _need_root() -> None:
    if os.geteuid() != 0:
        raise PermissionDenied("pydp testbed needs root (network namespaces, veth links, "
                               "sysctls)")


def _spec(name: str) -> tuple[_Host, ...]:
    try:
        return _TOPOLOGIES[name]
    except KeyError:
        raise InvalidArgument(f"unknown testbed topology '{name}' (known: "
                              f"{', '.join(_TOPOLOGIES)})") from None


def topologies() -> list[str]:
    """Names of the topologies :func:`up` knows."""
    return list(_TOPOLOGIES)


def _run(cmd: Sequence[str], timeout: float = CMD_TIMEOUT,
         check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise PydpError(f"'{cmd[0]}' not found: the testbed needs iproute2 "
                        "(apt-get install iproute2)")
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise PydpError(f"'{' '.join(cmd)}' failed ({p.returncode}): "
                        f"{(p.stderr or p.stdout).strip()}")
    return p


def _ns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def _link_exists(iface: str) -> bool:
    return Path("/sys/class/net", iface).exists()


# ethtool's legacy "set" ioctls (linux/ethtool.h), for machines without ethtool
_SIOCETHTOOL = 0x8946
_ETHTOOL_SET = {"rx": 0x15, "tx": 0x17, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}


def _offloads_off_ioctl(iface: str) -> None:
    import ctypes

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for feat in OFFLOADS:
            val = ctypes.create_string_buffer(struct.pack("II", _ETHTOOL_SET[feat], 0))
            ifr = bytearray(struct.pack("16sP", iface.encode(), ctypes.addressof(val)))
            ifr += bytes(40 - len(ifr))
            try:
                fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifr)
            except OSError as e:
                raise PydpError(f"{iface}: turning {feat} offload off failed: {e}") from None


def _offloads_off(iface: str) -> None:
    """Checksum, TSO, GSO and GRO off: ethtool if installed, else the ioctls it uses."""
    if shutil.which("ethtool"):
        _run(["ethtool", "-K", iface, *[w for f in OFFLOADS for w in (f, "off")]])
    else:
        _offloads_off_ioctl(iface)


def _sysctl(path: str, value: str) -> None:
    try:
        Path("/proc/sys", path).write_text(value)
    except OSError as e:
        raise PydpError(f"sysctl {path.replace('/', '.')}={value}: {e}") from None


# -- public API ------------------------------------------------------------------------------
def up(name: str = "two-host") -> Topology:
    """Create topology ``name`` (tearing down leftovers of it first) and return it.

    Raises InvalidArgument for an unknown name, PermissionDenied when not
    root, PydpError (with the command's message) when a step fails; a
    failed ``up`` leaves nothing behind.
    """
    spec = _spec(name)
    _need_root()
    down(name)
    try:
        for h in spec:
            _run(["ip", "netns", "add", h.ns])
            _run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
            _run(["ip", "link", "add", h.iface, "type", "veth", "peer", "name", h.dp_iface])
            # offloads first, in the root namespace: the settings move with the link
            _offloads_off(h.iface)
            _offloads_off(h.dp_iface)
            _sysctl(f"net/ipv6/conf/{h.dp_iface}/disable_ipv6", "1")
            if h.mac:
                _run(["ip", "link", "set", h.iface, "address", h.mac])
            _run(["ip", "link", "set", h.iface, "netns", h.ns])
            for a in h.addrs:
                v6 = ipaddress.ip_interface(a).version == 6
                _run(["ip", "-n", h.ns, "addr", "add", a, "dev", h.iface]
                     + (["nodad"] if v6 else []))
            _run(["ip", "-n", h.ns, "link", "set", h.iface, "up"])
            _run(["ip", "link", "set", h.dp_iface, "up"])
            for addr, mac in h.neigh:
                _run(["ip", "-n", h.ns, "neigh", "replace", addr, "lladdr", mac, "dev",
                      h.iface, "nud", "permanent"])
            for prefix, via in h.routes:
                _run(["ip", "-n", h.ns, "route", "replace", prefix, "via", via, "dev",
                      h.iface])
    except BaseException:
        down(name)
        raise
    return Topology(name=name, hosts=[h.ns for h in spec],
                    dp_ifaces={h.port: h.dp_iface for h in spec},
                    addresses={h.ns: list(h.addrs) for h in spec},
                    host_ifaces={h.ns: h.iface for h in spec},
                    host_ports={h.ns: h.port for h in spec})


def down(name: str = "two-host") -> None:
    """Remove topology ``name``: its links, the processes in its namespaces, the namespaces.

    Safe to call when it is absent or half built. Close any Dataplane using
    its interfaces first.
    """
    spec = _spec(name)
    _need_root()
    for h in spec:
        if _link_exists(h.dp_iface):
            _run(["ip", "link", "del", h.dp_iface], check=False)
        if _ns_exists(h.ns):
            pids = _run(["ip", "netns", "pids", h.ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
            _run(["ip", "netns", "del", h.ns], check=False)
        elif _link_exists(h.iface):  # a veth that never reached its namespace
            _run(["ip", "link", "del", h.iface], check=False)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        left = [i for h in spec for i in (h.dp_iface, h.iface) if _link_exists(i)]
        left += [h.ns for h in spec if _ns_exists(h.ns)]
        if not left:
            return
        time.sleep(0.02)
    raise PydpError(f"testbed {name}: {', '.join(left)} still there after teardown")


def exec_in(ns: str, cmd: list[str], timeout: float, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in namespace ``ns`` and wait at most ``timeout`` s for it.

    Returns the CompletedProcess with text stdout/stderr. Raises
    subprocess.TimeoutExpired (the command is killed) on timeout and, with
    ``check``, PydpError when it exits non-zero.
    """
    _need_root()
    if not _ns_exists(ns):
        raise InvalidArgument(f"no network namespace '{ns}' (is the testbed up?)")
    p = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                       timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise PydpError(f"[{ns}] '{' '.join(cmd)}' failed ({p.returncode}): "
                        f"{(p.stderr or p.stdout).strip()}")
    return p


def spawn_in(ns: str, cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start ``cmd`` in namespace ``ns`` without waiting (a server, a receiver).

    The caller owns the process: stop it with ``terminate``/``kill`` and
    ``wait(timeout=...)``. :func:`down` kills whatever is left in the namespace.
    """
    _need_root()
    if not _ns_exists(ns):
        raise InvalidArgument(f"no network namespace '{ns}' (is the testbed up?)")
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **popen_kwargs)


_PY_PING = r"""
import os, socket, struct, sys, time
dst, n, iv, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident, req, rep = os.getpid() & 0xFFFF, (128 if v6 else 8), (129 if v6 else 0)
def csum(b):
    b += b"\0" * (len(b) % 2)
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
got = 0
for seq in range(1, n + 1):
    data = b"pydp-testbed-ping" * 3
    c = 0 if v6 else csum(struct.pack("!BBHHH", req, 0, 0, ident, seq) + data)
    s.sendto(struct.pack("!BBHHH", req, 0, c, ident, seq) + data, (dst, 0))
    end = time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        if left <= 0:
            print("no reply icmp_seq=%d" % seq)
            break
        s.settimeout(left)
        try:
            pkt = s.recv(4096)
        except socket.timeout:
            continue
        if not v6:
            pkt = pkt[(pkt[0] & 15) * 4:]
        if len(pkt) < 8:
            continue
        t, _, _, i, sq = struct.unpack("!BBHHH", pkt[:8])
        if (t, i, sq) == (rep, ident, seq):
            got += 1
            print("reply from %s: icmp_seq=%d" % (dst, seq))
            break
    if seq < n:
        time.sleep(iv)
print("%d packets transmitted, %d received" % (n, got))
sys.exit(0 if got else 1)
"""


def ping(ns: str, dst: str, count: int = 3, interval: float = 0.2, wait: float = 1.0,
         timeout: float | None = None) -> tuple[int, str]:
    """Ping ``dst`` (IPv4 or IPv6) from namespace ``ns``: (replies received, output).

    Uses iputils ``ping`` when installed, else an equivalent raw-socket
    ICMP echo in python3. ``wait``: seconds to wait for each reply.
    """
    budget = timeout if timeout is not None else count * (interval + wait) + 5.0
    v6 = ipaddress.ip_address(dst).version == 6
    if shutil.which("ping"):
        cmd = ["ping", "-6" if v6 else "-4", "-n", "-c", str(count), "-i", str(interval),
               "-W", str(wait), dst]
    else:
        cmd = [sys.executable, "-c", _PY_PING, dst, str(count), str(interval), str(wait)]
    p = exec_in(ns, cmd, timeout=budget)
    out = p.stdout + p.stderr
    for line in out.splitlines():
        if "transmitted" in line:
            try:
                return int(line.split(",")[1].split()[0]), out
            except (IndexError, ValueError):
                break
    return 0, out


__all__ = ["Topology", "down", "exec_in", "ping", "spawn_in", "topologies", "up"]
