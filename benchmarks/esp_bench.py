#!/usr/bin/env python3
"""ESP encrypt and decrypt throughput per core, against `openssl speed` in the same run.

For each cipher and size (the inner IP packet: what ESP protects), a
template source (pydp.Source, made in C) feeds one worker:

* encrypt: parse -> esp_encrypt -> forward to a net_null sink;
* decrypt: parse -> esp_decrypt -> forward to a net_null sink, the template
  being one ESP packet sealed by scapy (replay window 0, so the same
  sequence number decrypts every time: the crypto and rte_ipsec work is the
  same as for fresh packets).

Per core = per second of CPU time the worker thread really got (the
machine is shared), as `openssl speed` divides by CPU user time too.
Gbit/s counts the protected bytes (the inner packet). `openssl speed -evp
CIPHER -bytes N` runs in the same process tree right after, at the same
sizes (`-decrypt` for the decrypt column); the ratio is pydp's bytes/s over
OpenSSL's (target >= 1.0). OpenSSL's figure is a bare EVP update loop over
one buffer: no packet, no header, no tag per call; pydp's is a whole
packet through parse, SPD, rte_ipsec framing, AEAD with its tag, and tx.
The ``ceiling`` column (benchmarks/aead_floor, run in the same process
tree) is that update loop's cost over the intel-ipsec-mb AEAD job's alone:
the best ratio any per-packet ESP built on the library can reach.

    sudo python3 benchmarks/esp_bench.py [--duration 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Raw

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pydp import Dataplane, Pipeline, Source, eal  # noqa: E402
from pydp.bench import _measure, _null_devargs  # noqa: E402
from pydp.esp import SA  # noqa: E402
from pydp.stages import EspDecrypt, EspEncrypt, Forward, Parse  # noqa: E402

SIZES = (64, 512, 1400)
CIPHERS = {"aes-gcm-128": ("aes-128-gcm", "AES-GCM", 20),
           "chacha20-poly1305": ("chacha20-poly1305", "CHACHA20-POLY1305", 36)}
TARGET = 1.0


def inner(size: int) -> Any:
    """An inner IPv4/UDP packet of exactly ``size`` bytes."""
    p = IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1000, dport=2000)
    return p / Raw(b"\x00" * (size - len(p)))


def make_sa(cipher: str, direction: str) -> SA:
    """The bench SA (a fixed key; window 0 inbound, see the module doc)."""
    return SA(spi=0x1001, direction=direction, cipher=cipher,
              key=bytes(range(CIPHERS[cipher][2])), tunnel_src="192.0.2.1",
              tunnel_dst="192.0.2.2", replay_window=0,
              selectors=[{"src": "10.1.0.0/16", "dst": "10.2.0.0/16"}])


def pydp_run(cipher: str, direction: str, size: int, duration: float,
             crypto: str = "auto") -> dict[str, Any]:
    """Mpps and Gbit/s per core of one stage at one size."""
    sa = make_sa(cipher, direction)
    if direction == "out":
        stage = EspEncrypt("esp", next="fwd", sas=[sa], crypto=crypto)
        tmpl = Ether() / inner(size)
    else:
        stage = EspDecrypt("esp", next="fwd", sas=[sa], crypto=crypto)
        ssa = SecurityAssociation(ESP, spi=sa.spi, crypt_algo=CIPHERS[cipher][1],
                                  crypt_key=bytes(sa.key),
                                  tunnel_header=IP(src=sa.tunnel_src, dst=sa.tunnel_dst))
        tmpl = Ether() / ssa.encrypt(inner(size))
    pl = Pipeline("esp_bench", ports=["in", "out"], inputs={"in": "parse"},
                  stages=[Parse("parse", next="esp"), stage, Forward("fwd", port="out")])
    src = Source([tmpl], count=0)
    with Dataplane(pl, ports={"in": _null_devargs(), "out": _null_devargs()},
                   sources={"in": src}) as dp:
        dev = dp.sa_list("esp")[0]["crypto_dev"]
        m = _measure(dp, "in", duration, min(0.5, duration / 4))
        st = dp.stats()
        if st.drops():
            raise RuntimeError(f"{cipher} {direction} {size}: drops {st.drops()}")
    mpps = m["cpu_mpps"] or m["mpps"]
    return {"mpps": mpps, "gbps": mpps * size * 8 / 1000, "bytes_per_s": mpps * 1e6 * size,
            "cycles_per_packet": m["cpu_cycles_per_packet"] or m["cycles_per_packet"],
            "cpu_share": m["cpu_share"], "crypto_dev": dev}


def openssl_speed(evp: str, size: int, decrypt: bool, seconds: int) -> float:
    """Bytes per second of `openssl speed -evp EVP -bytes SIZE` (CPU user time)."""
    cmd = ["openssl", "speed", "-mr", "-seconds", str(seconds), "-bytes", str(size),
           "-evp", evp] + (["-decrypt"] if decrypt else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    for line in out.splitlines():
        if line.startswith("+F:"):
            return float(line.split(":")[3])
    raise RuntimeError(f"no result line in: {' '.join(cmd)}\n{out}")


def library_ceilings() -> dict[tuple[str, str, int], float]:
    """(evp name, 'encrypt'|'decrypt', size) -> the best ratio to `openssl speed` any
    per-packet ESP on intel-ipsec-mb can reach: OpenSSL's update loop over the
    ipsec-mb job alone (benchmarks/aead_floor, built and run here; {} if it cannot be)."""
    script = os.path.join(os.path.dirname(__file__), "aead_floor", "run.sh")
    try:
        out = subprocess.run(["bash", script, "--json"], capture_output=True, text=True,
                             check=True, timeout=300).stdout
        rows = json.loads(out)["rows"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return {}
    got = {}
    for r in rows:
        got[(r["cipher"], "encrypt", r["size"])] = r["evp_update"] / r["ipsec_mb"]
        got[(r["cipher"], "decrypt", r["size"])] = r["evp_update_decrypt"] / r["ipsec_mb_decrypt"]
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--openssl-seconds", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--crypto", default="auto", help="crypto device of the ESP stage")
    ap.add_argument("--cipher", action="append", choices=list(CIPHERS))
    args = ap.parse_args()
    info = eal.init()
    rows = []
    for cipher, (evp, _, _) in CIPHERS.items():
        if args.cipher and cipher not in args.cipher:
            continue
        for direction in ("out", "in"):
            for size in SIZES:
                r = pydp_run(cipher, direction, size, args.duration, args.crypto)
                ossl = openssl_speed(evp, size, direction == "in", args.openssl_seconds)
                rows.append({"cipher": cipher, "op": "encrypt" if direction == "out"
                             else "decrypt", "size": size, **r, "openssl_bytes_per_s": ossl,
                             "ratio": r["bytes_per_s"] / ossl if ossl else 0.0})
    ceil = library_ceilings()
    for r in rows:
        c = ceil.get((CIPHERS[r["cipher"]][0], r["op"], r["size"]))
        r["library_ceiling"] = round(c, 3) if c is not None else None
    doc = {"memory": info.memory, "target_ratio": TARGET, "time": time.time(), "rows": rows}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"ESP per core ({info.memory}); ratio = pydp bytes/s / openssl speed bytes/s")
    print(f"{'cipher':18} {'op':8} {'size':>5} {'Mpps':>7} {'Gbit/s':>7} {'cyc/pkt':>8} "
          f"{'openssl Gbit/s':>14} {'ratio':>6}      {'ceiling':>7}  crypto device")
    for r in rows:
        print(f"{r['cipher']:18} {r['op']:8} {r['size']:5d} {r['mpps']:7.3f} {r['gbps']:7.2f} "
              f"{r['cycles_per_packet']:8.0f} {r['openssl_bytes_per_s'] * 8 / 1e9:14.2f} "
              f"{r['ratio']:6.2f} {'PASS' if r['ratio'] >= TARGET else 'MISS'} "
              f"{r['library_ceiling'] if r['library_ceiling'] is not None else '-':>7}  "
              f"{r['crypto_dev']}")
    print("ceiling: OpenSSL's update loop / the intel-ipsec-mb AEAD job alone "
          "(benchmarks/aead_floor), the most any per-packet ESP on that library can reach")
    return 0


if __name__ == "__main__":
    sys.exit(main())
