"""The lb testbed's client: HTTP requests to the VIP, driven line by line on stdin.

    python -m pydp.lb.httpc --vip 10.77.0.100 --port 80

Commands (one per line; one JSON line answers each):

* ``new N``: N requests, each on a new TCP connection -> ``{"backend name": count}``
* ``keep``: one request on the one kept-alive connection (opened on first use)
  -> ``{"backend": name}``
* ``quit``
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from collections import Counter


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vip", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    kept: http.client.HTTPConnection | None = None

    def get(conn: http.client.HTTPConnection) -> str:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.read().decode().strip()

    for line in sys.stdin:
        cmd = line.split()
        try:
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "new":
                c: Counter = Counter()
                for _ in range(int(cmd[1])):
                    conn = http.client.HTTPConnection(a.vip, a.port, timeout=a.timeout)
                    try:
                        c[get(conn)] += 1
                    finally:
                        conn.close()
                out: dict = dict(c)
            elif cmd[0] == "keep":
                if kept is None:
                    kept = http.client.HTTPConnection(a.vip, a.port, timeout=a.timeout)
                out = {"backend": get(kept)}
            else:
                out = {"error": f"unknown command {cmd[0]}"}
        except OSError as e:
            out = {"error": str(e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
