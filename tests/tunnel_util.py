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

    def config(self, node: str, port: int, peers: dict[str, int], **extra) -> TunnelConfig:
        """A config for ``node`` on 127.0.0.1:port with ``peers`` {node: port}."""
        idx = lambda n: int(n[1:])  # noqa: E731 - n1 -> 1
        crt, key = self.paths(node)
        d = {"cert": str(crt), "key": str(key), "ca": str(self.root / "ca" / "ca.crt"),
             "crl": str(self.root / "ca" / "crl.pem"), "listen": f"127.0.0.1:{port}",
             "address": f"192.0.2.{idx(node)}", "subnets": [f"10.{idx(node)}.0.0/24"],
             "peers": [{"node": p, "endpoint": f"127.0.0.1:{pp}", "address": f"192.0.2.{idx(p)}",
                        "subnets": [f"10.{idx(p)}.0.0/24"]} for p, pp in peers.items()]}
        d.update(extra)
        return TunnelConfig.from_dict(d, f"<{node}>")
