"""Tunnel handshake cost and rekey latency, against the crypto it cannot avoid.

In one run, on this machine:

1. **baseline**: the public-key operations and hashes a handshake needs, done
   bare with ``cryptography``. For both sides together that is: 2 X25519
   keygens and 2 exchanges, 2 Ed25519 signatures, 2 transcript verifications,
   2 certificate-signature verifications, 2 HKDF runs and 6 HMACs.
2. **handshake**: the four messages of :mod:`pydp.tunnel.handshake`, both sides
   in one process. It adds the full peer checks (chain, validity, SPIFFE ID,
   CRL), JSON and base64.
3. **rekey over UDP**: two :class:`~pydp.tunnel.manager.TunnelManager` on loopback
   with in-memory SA tables. The time runs from ``rekey()`` until both nodes
   have switched to the new generation.

Prints the figures and the ratio of 2 to 1. It is a measurement, not a test:
it exits 0 whatever the figures.

    sudo python3 benchmarks/tunnel_handshake.py [--n 300] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import x25519  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402
from tunnel_util import Pki  # noqa: E402

from pydp.tunnel import handshake as hs  # noqa: E402


def baseline(pki: Pki, n: int) -> float:
    """Seconds per handshake's worth of bare primitives."""
    me, peer = pki.identity("n1"), pki.identity("n2")
    ca = pki.ca.cert
    msg = b"x" * 900
    t0 = time.perf_counter()
    for _ in range(n):
        a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        s1 = a.exchange(b.public_key())
        a.exchange(b.public_key())
        for ident, other in ((me, peer), (peer, me)):
            sig = ident.sign(msg)
            ident.cert.public_key().verify(sig, msg)
            other.cert.verify_directly_issued_by(ca)
        for _ in range(2):
            HKDF(algorithm=hashes.SHA256(), length=104, salt=b"n" * 64, info=b"i" * 50) \
                .derive(s1)
        for _ in range(6):
            hmac.new(b"k" * 32, msg, hashlib.sha256).digest()
    return (time.perf_counter() - t0) / n


def handshake(pki: Pki, n: int) -> float:
    """Seconds per full in-memory handshake (both sides)."""
    i1, i2, trust = pki.identity("n1"), pki.identity("n2"), pki.trust()
    life = hs.Lifetime.from_hard(3600)
    t0 = time.perf_counter()
    for _ in range(n):
        ini = hs.Initiator(i1, trust, "n2", ["aes-gcm-128"], life)
        r = hs.Responder(i2, trust, hs.decode(ini.m1), ini.m1, {"n1"}, ["aes-gcm-128"], life,
                         hs.ReplayCache())
        m3, ki = ini.on_resp(hs.decode(r.m2))
        m4, kr = r.on_fin(hs.decode(m3))
        ini.on_ack(hs.decode(m4))
        ki.wipe()
    return (time.perf_counter() - t0) / n


def rekeys(pki: Pki, n: int) -> list[float]:
    """Seconds from rekey() until both nodes switched, ``n`` times."""
    from test_tunnel_manager import Pair
    p = Pair(pki, grace=0.05)
    try:
        p.up()
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            p.m1.rekey("n2")
            while not (p.m1.tunnels["n2"].rekeys == i + 1 and p.m2.tunnels["n1"].rekeys == i + 1):
                time.sleep(0.0005)
            out.append(time.perf_counter() - t0)
            time.sleep(0.1)
        return out
    finally:
        p.close()


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="handshakes per measurement")
    ap.add_argument("--rekeys", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    pki = Pki(Path(tempfile.mkdtemp(prefix="pydp-tunnel-bench-")), nodes=("n1", "n2"))
    handshake(pki, 5)  # warm up
    base = baseline(pki, a.n)
    full = handshake(pki, a.n)
    rk = rekeys(pki, a.rekeys)
    res = {"baseline_ms": base * 1e3, "handshake_ms": full * 1e3,
           "handshakes_per_s": 1 / full, "ratio_to_baseline": full / base,
           "rekey_median_ms": statistics.median(rk) * 1e3, "rekey_max_ms": max(rk) * 1e3}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"bare primitives per handshake:   {res['baseline_ms']:.2f} ms")
    print(f"full handshake (both sides):      {res['handshake_ms']:.2f} ms "
          f"({res['handshakes_per_s']:.0f}/s, {res['ratio_to_baseline']:.2f} x baseline)")
    print(f"rekey over loopback UDP:          median {res['rekey_median_ms']:.1f} ms, "
          f"max {res['rekey_max_ms']:.1f} ms ({a.rekeys} rekeys)")


if __name__ == "__main__":
    main()
