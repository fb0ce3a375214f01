"""Prometheus text exposition of a dataplane's counters, on loopback by default.

``pydp run --metrics 9100`` serves ``http://127.0.0.1:9100/metrics``. Names
follow Prometheus conventions: ``pydp_port_rx_packets_total{port="in"}``,
``pydp_stage_drops_total{stage="parse",reason="truncated-ip"}``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .stats import Stats

_PORT_METRICS = {
    "rx_packets": ("pydp_port_rx_packets_total", "Packets received on the port."),
    "rx_bytes": ("pydp_port_rx_bytes_total", "Bytes received on the port."),
    "tx_packets": ("pydp_port_tx_packets_total", "Packets transmitted on the port."),
    "tx_bytes": ("pydp_port_tx_bytes_total", "Bytes transmitted on the port."),
    "missed": ("pydp_port_rx_missed_total", "Packets the device dropped for lack of rx room."),
    "errors": ("pydp_port_errors_total", "Device rx and tx errors."),
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(st: Stats, pipeline: str = "") -> str:
    """Render a :class:`Stats` snapshot as Prometheus text format 0.0.4."""
    out: list[str] = []
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, help_: str, labels: dict[str, str], value: float,
            kind: str = "counter") -> None:
        fam = families.setdefault(name, (help_, kind, []))
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        fam[2].append(f"{name}{{{lab}}} {value}")

    base = {"pipeline": pipeline} if pipeline else {}
    for port, p in st.ports().items():
        for key, (name, help_) in _PORT_METRICS.items():
            if key in p:
                add(name, help_, {**base, "port": port}, p[key])
        for reason, n in p["drops"].items():
            add("pydp_port_drops_total", "Packets the port dropped, by reason.",
                {**base, "port": port, "reason": reason}, n)
    for stage, s in st.stages().items():
        add("pydp_stage_packets_total", "Packets that entered the stage.",
            {**base, "stage": stage}, s["in"])
        for reason, n in s["drops"].items():
            add("pydp_stage_drops_total", "Packets the stage dropped, by reason.",
                {**base, "stage": stage, "reason": reason}, n)
        for k, v in s.items():
            if k not in ("in", "drops"):
                add("pydp_stage_counter_total", "Stage-specific counters.",
                    {**base, "stage": stage, "counter": k}, v)
    add("pydp_uptime_seconds", "Seconds the pipeline has run.", base, round(st.elapsed, 3),
        "gauge")
    for name, (help_, kind, samples) in families.items():
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples)
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves /metrics from a background thread; binds 127.0.0.1 unless told otherwise."""

    def __init__(self, snapshot: Callable[[], Stats], port: int, host: str = "127.0.0.1",
                 pipeline: str = "") -> None:
        """Bind ``host:port`` (port 0 picks a free one: see :attr:`port`)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = exposition(outer.snapshot(), outer.pipeline).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.snapshot = snapshot
        self.pipeline = pipeline
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="pydp-metrics")

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
