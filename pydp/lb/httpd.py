"""A tiny HTTP/1.1 backend for the lb testbed: answers every GET with its name.

    python -m pydp.lb.httpd --bind 10.77.1.11 --port 8080 --name be1

Keep-alive works (HTTP/1.1, Content-Length), so one connection can carry
several requests: the testbed checks that a running connection stays on its
backend while that backend is drained or removed.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(bind: str, port: int, name: str) -> None:
    """Serve until killed."""
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    ThreadingHTTPServer((bind, port), Handler).serve_forever()


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--name", required=True)
    a = ap.parse_args()
    serve(a.bind, a.port, a.name)


if __name__ == "__main__":
    main()
