"""The tunnel testbed: two hosts, two pydp mesh nodes, an ESP-only wire between them.

::

    netns pdtn-a                root namespace                               netns pdtn-b
    pdtn-ha 10.77.1.1/24 = pdtn-ha-dp [node n1] pdtn-wa == pdtn-wb [node n2] pdtn-hb-dp = pdtn-hb
      fd00:77:1::1/64     (inside)    (outside)   wire    (outside)  (inside) 10.77.2.1/24
                                                                                fd00:77:2::1/64

- Each host routes the other host's subnets (IPv4 and IPv6) via a gateway address
  whose MAC is a permanent neighbour entry, so the host sends to its node without
  ARP or ND. The tunnel is dual-stack: one handshake, an SA pair per family.
- The node's outside ports are the two ends of one veth pair, ``pdtn-wa`` and
  ``pdtn-wb`` (tunnel addresses 192.168.77.1 and .2). Like every root-side end, they
  carry no address and have IPv6 disabled: the only frames on the wire are the
  ones the nodes send.
- The handshakes run over loopback UDP (the control path), not over the wire.
- Host MTU 1400 leaves room for the ESP overhead on the 1500-byte wire.
- The root-side interfaces get fixed ifindexes with bit 15 set: DPDK's af_packet PMD
  names its PACKET_FANOUT group ``(pid ^ ifindex) & 0xffff``, and two processes whose
  groups collide on different interfaces fail to probe (EINVAL). pids stay below
  32768 here, so these groups never meet another process's (n1's and n2's differ
  by 0x2330, far more than two pids started together).

Built with the helpers of :mod:`pydp.testbed`; everything needs root.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import testbed as tb
from .ca import MeshCA

HOST_MAC = "02:00:00:00:77:10"      # both hosts (each on its own segment)
GATEWAY_MAC = "02:00:00:00:77:fe"   # what the hosts send to: their node
HOST_MTU = 1400


@dataclass(frozen=True)
class Side:
    """One node of the testbed and the host behind it."""

    node: str
    ns: str
    host_if: str
    dp_if: str
    wire_if: str
    host_addr: str
    subnet: str
    gateway: str
    tunnel_addr: str
    host_addr6: str
    subnet6: str
    gateway6: str
    dp_index: int
    wire_index: int


SIDES = (
    Side("n1", "pdtn-a", "pdtn-ha", "pdtn-ha-dp", "pdtn-wa", "10.77.1.1/24", "10.77.1.0/24",
         "10.77.1.254", "192.168.77.1", "fd00:77:1::1/64", "fd00:77:1::/64", "fd00:77:1::fe",
         0x8110, 0x8111),
    Side("n2", "pdtn-b", "pdtn-hb", "pdtn-hb-dp", "pdtn-wb", "10.77.2.1/24", "10.77.2.0/24",
         "10.77.2.254", "192.168.77.2", "fd00:77:2::1/64", "fd00:77:2::/64", "fd00:77:2::fe",
         0xA220, 0xA221),
)
PIPELINE = Path(__file__).resolve().parents[2] / "testbeds" / "tunnel-node.yaml"


def host_ip(side: Side, version: int = 4) -> str:
    """The host's IPv4 (or IPv6) address without prefix length."""
    return str(ipaddress.ip_interface(side.host_addr if version == 4 else side.host_addr6).ip)


def down() -> None:
    """Remove the testbed (safe when absent or half built)."""
    tb._need_root()
    for s in SIDES:
        for link in (s.dp_if, s.wire_if):
            if tb._link_exists(link):
                tb._run(["ip", "link", "del", link], check=False)
        if tb._ns_exists(s.ns):
            for pid in tb._run(["ip", "netns", "pids", s.ns], check=False).stdout.split():
                tb._run(["kill", "-9", pid], check=False)
            tb._run(["ip", "netns", "del", s.ns], check=False)


def up() -> tuple[Side, ...]:
    """Build the testbed (tearing down leftovers first); a failed ``up`` leaves nothing."""
    tb._need_root()
    down()
    try:
        a, b = SIDES
        tb._run(["ip", "link", "add", a.wire_if, "index", str(a.wire_index), "type", "veth",
                 "peer", "name", b.wire_if, "index", str(b.wire_index)])
        for w in (a.wire_if, b.wire_if):
            tb._offloads_off(w)
            tb._sysctl(f"net/ipv6/conf/{w}/disable_ipv6", "1")
            tb._run(["ip", "link", "set", w, "up"])
        for s in SIDES:
            tb._run(["ip", "netns", "add", s.ns])
            tb._run(["ip", "-n", s.ns, "link", "set", "lo", "up"])
            tb._run(["ip", "link", "add", s.dp_if, "index", str(s.dp_index), "type", "veth",
                     "peer", "name", s.host_if, "address", HOST_MAC, "mtu", str(HOST_MTU)])
            tb._offloads_off(s.host_if)
            tb._offloads_off(s.dp_if)
            tb._sysctl(f"net/ipv6/conf/{s.dp_if}/disable_ipv6", "1")
            tb._run(["ip", "link", "set", s.host_if, "netns", s.ns])
            # no router solicitations: the host's IPv6 traffic is only what it sends
            tb._run(["ip", "netns", "exec", s.ns, "sysctl", "-qw",
                     f"net.ipv6.conf.{s.host_if}.router_solicitations=0"])
            tb._run(["ip", "-n", s.ns, "addr", "add", s.host_addr, "dev", s.host_if])
            tb._run(["ip", "-n", s.ns, "addr", "add", s.host_addr6, "dev", s.host_if,
                     "nodad"])
            tb._run(["ip", "-n", s.ns, "link", "set", s.host_if, "up"])
            tb._run(["ip", "link", "set", s.dp_if, "up"])
            for gw in (s.gateway, s.gateway6):
                tb._run(["ip", "-n", s.ns, "neigh", "replace", gw, "lladdr", GATEWAY_MAC,
                         "dev", s.host_if, "nud", "permanent"])
        for s, o in ((a, b), (b, a)):
            tb._run(["ip", "-n", s.ns, "route", "add", o.subnet, "via", s.gateway])
            tb._run(["ip", "-n", s.ns, "-6", "route", "add", o.subnet6, "via", s.gateway6])
    except BaseException:
        down()
        raise
    return SIDES


def devargs(side: Side, index: int) -> list[str]:
    """``--port`` arguments of a node (vdev names unique per process anyway)."""
    return ["--port", f"inside=net_af_packet{2 * index},iface={side.dp_if}",
            "--port", f"outside=net_af_packet{2 * index + 1},iface={side.wire_if}"]


def write_configs(directory: str | Path, ports: tuple[int, int], lifetime: int = 3600,
                  grace: float = 1.0) -> dict[str, Path]:
    """A mesh CA, both nodes' certificates and tunnel configs in ``directory``.

    ``ports``: the two nodes' handshake UDP ports on 127.0.0.1. Returns node -> config.
    """
    d = Path(directory)
    ca = MeshCA.init(d / "ca", force=True)
    out = {}
    for s, (o, op), mp in ((SIDES[0], (SIDES[1], ports[1]), ports[0]),
                           (SIDES[1], (SIDES[0], ports[0]), ports[1])):
        ca.issue(s.node, d / s.node)
        cfg = {"node": s.node, "cert": f"{s.node}/{s.node}.crt",
               "key": f"{s.node}/{s.node}.key", "ca": "ca/ca.crt", "crl": "ca/crl.pem",
               "listen": f"127.0.0.1:{mp}", "address": s.tunnel_addr,
               "subnets": [s.subnet, s.subnet6],
               "ciphers": ["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305"],
               "lifetime": {"seconds": lifetime}, "grace": grace,
               "stages": {"encrypt": "esp_out", "decrypt": "esp_in"},
               "peers": [{"node": o.node, "endpoint": f"127.0.0.1:{op}",
                          "address": o.tunnel_addr, "subnets": [o.subnet, o.subnet6]}]}
        p = d / f"{s.node}.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out[s.node] = p
    return out
