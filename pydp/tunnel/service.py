"""``tunnel.*`` commands on a running node's control socket.

One function per action: the CLI (``pydp tunnel show|rekey|rotate|reload|deny``)
calls these through the socket, and they call the :class:`TunnelManager`.
Nothing here ever returns key material.
"""

from __future__ import annotations

from typing import Any

from .manager import TunnelManager


def register(server: Any, mgr: TunnelManager) -> None:
    """Serve tunnel.show / tunnel.rekey / tunnel.rotate / tunnel.reload / tunnel.deny."""
    server.register("tunnel.show", mgr.show)
    server.register("tunnel.rekey", lambda peer=None: {"rekeying": mgr.rekey(peer)})
    server.register("tunnel.rotate", mgr.rotate)
    server.register("tunnel.reload", mgr.reload)
    server.register("tunnel.deny", lambda node: mgr.deny(str(node)))


def format_show(doc: dict[str, Any]) -> str:
    """``pydp tunnel show`` as text: identity, then per peer its state and SAs."""
    lines = [f"node {doc['node']} ({doc['spiffe_id']}) serial {doc['serial']} "
             f"valid until {doc['not_after']}",
             f"  handshake on {doc['listen']}, tunnel address {doc['address']}, "
             f"subnets {', '.join(doc['subnets'])}; stages {doc['stages']['encrypt']}/"
             f"{doc['stages']['decrypt']}; rotations {doc['rotations']}"]
    if doc.get("identity_error"):
        lines.append(f"  OUT OF THE MESH: {doc['identity_error']}")
    if doc.get("crl_stale"):
        lines.append(f"  CRL STALE since {doc['crl_next_update']}: re-issue it "
                     "(pydp tunnel ca crl)")
    if doc.get("deny"):
        lines.append(f"  deny list: {', '.join(doc['deny'])}")
    for t in doc["tunnels"]:
        lines.append(f"peer {t['peer']}: {t['state']} for {t['since_s']:.1f} s, "
                     f"{t['handshakes']} handshakes, {t['rekeys']} rekeys"
                     + (", rekey in progress" if t["rekey_in_progress"] else "")
                     + f"  [{t['endpoint']} -> {t['address']} {', '.join(t['subnets'])}]")
        if t.get("last_error"):
            lines.append(f"  last error: {t['last_error']}")
        for s in t["sas"]:
            lt = s["lifetime"]
            limits = ", ".join(f"{k} {lt['soft_' + k]:g}/{lt['hard_' + k]:g}"
                               for k in ("seconds", "bytes", "packets") if lt["hard_" + k])
            lines.append(f"  {s['direction']:<3} IPv{s['family']} spi {s['spi']} {s['cipher']:<17} "
                         f"{s['state']:<8}"
                         f" age {s['age_s']:7.1f} s  {s['packets']:>10} pkts {s['bytes']:>12} "
                         f"bytes  soft/hard: {limits or 'none'}"
                         + (f"  (removed in {s['retire_in_s']:.1f} s)"
                            if s["retire_in_s"] is not None else ""))
    return "\n".join(lines)
