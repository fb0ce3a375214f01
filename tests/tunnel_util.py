"""Shared helpers for the tunnel tests: a CA with nodes, configs, free UDP ports."""

from __future__ import annotations

import socket
from pathlib import Path

from pydp.tunnel.ca import MeshCA, NodeIdentity, TrustStore
from pydp.tunnel.config import TunnelConfig


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pki:
    """A mesh CA in a temporary directory and the nodes issued from it."""

    def __init__(self, root: Path, nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> None:
        self.root = root
        self.ca = MeshCA.init(root / "ca")
        for n in nodes:
            self.ca.issue(n)

    def paths(self, node: str) -> tuple[Path, Path]:
        d = self.root / "ca" / "nodes"
        return d / f"{node}.crt", d / f"{node}.key"

    def identity(self, node: str) -> NodeIdentity:
        return NodeIdentity.load(*self.paths(node))

    def trust(self) -> TrustStore:
        return TrustStore(self.root / "ca" / "ca.crt", self.root / "ca" / "crl.pem")

    def config(self, node: str, port: int, peers: dict[str, int], dual: bool = False,
               **extra) -> TunnelConfig:
        """A config for ``node`` on 127.0.0.1:port with ``peers`` {node: port}.

        ``dual``: IPv6 subnets (fd00:N::/64) next to the IPv4 ones (10.N.0.0/24).
        """
        idx = lambda n: int(n[1:])  # noqa: E731 - n1 -> 1
        nets = lambda n: [f"10.{idx(n)}.0.0/24"] + ([f"fd00:{idx(n)}::/64"]  # noqa: E731
                                                    if dual else [])
        crt, key = self.paths(node)
        d = {"cert": str(crt), "key": str(key), "ca": str(self.root / "ca" / "ca.crt"),
             "crl": str(self.root / "ca" / "crl.pem"), "listen": f"127.0.0.1:{port}",
             "address": f"192.0.2.{idx(node)}", "subnets": nets(node),
             "peers": [{"node": p, "endpoint": f"127.0.0.1:{pp}", "address": f"192.0.2.{idx(p)}",
                        "subnets": nets(p)} for p, pp in peers.items()]}
        d.update(extra)
        return TunnelConfig.from_dict(d, f"<{node}>")
