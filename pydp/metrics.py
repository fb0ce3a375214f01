"""Prometheus text exposition of a dataplane's counters, on loopback by default.

``pydp run --metrics 9100`` serves ``http://127.0.0.1:9100/metrics``. Names
follow Prometheus conventions: ``pydp_port_rx_packets_total{port="in"}``,
``pydp_stage_drops_total{stage="parse",reason="truncated-ip"}``.

Features add their own metrics with one call: a *metric provider* is a
function of the :class:`pydp.Dataplane` that yields :class:`Metric` samples
(and nothing when the pipeline lacks the feature)::

    from pydp.metrics import Metric, register_provider

    def service_metrics(dp):
        for svc, backend, pkts in my_counters(dp):
            yield Metric("pydp_lb_backend_packets_total", "Packets sent to the backend.",
                         {"service": svc, "backend": backend}, pkts)

    register_provider("lb", service_metrics)

Providers run on each scrape, on the metrics thread; a provider that raises
is skipped (and counted in ``pydp_metrics_provider_errors_total``), so one
feature's bug never hides the others' metrics. Policy rule hits are the
first provider (:func:`policy_metrics`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .stats import Stats


@dataclass
class Metric:
    """One sample: a metric family name, its help text, labels, the value and the kind."""

    name: str
    help: str
    labels: dict[str, str] = field(default_factory=dict)
    value: float = 0
    kind: str = "counter"


Provider = Callable[[Any], Iterable[Metric]]
_providers: dict[str, Provider] = {}


def register_provider(name: str, fn: Provider) -> None:
    """Add (or replace) the metric provider ``name``: ``fn(dataplane)`` yields :class:`Metric`."""
    _providers[name] = fn


def unregister_provider(name: str) -> None:
    """Remove the metric provider ``name`` (no error if absent)."""
    _providers.pop(name, None)


def providers() -> dict[str, Provider]:
    """The registered providers by name."""
    return dict(_providers)


def collect(dp: Any) -> tuple[list[Metric], dict[str, str]]:
    """Run every provider on ``dp``: their samples, and the providers that failed (name: error)."""
    out: list[Metric] = []
    failed: dict[str, str] = {}
    for name, fn in list(_providers.items()):
        try:
            out.extend(fn(dp))
        except Exception as e:  # noqa: BLE001 - one provider never hides the rest
            failed[name] = str(e)
    return out, failed


def policy_metrics(dp: Any) -> Iterable[Metric]:
    """Per policy rule: packets and bytes that hit it (the live policy's rule names)."""
    stages = [s.name for s in dp.pipeline.stages if s.TYPE == "policy"]
    if not stages or dp._cp is None:
        return
    svc = dp.services.get("policy")
    if svc is None:
        from .policy.service import PolicyService
        svc = dp.services.setdefault("policy", PolicyService(dp))
    for st in stages:
        for r in svc.stats(st)["rules"]:
            lab = {"stage": st, "rule": r["rule"], "action": r["action"]}
            yield Metric("pydp_policy_rule_packets_total", "Packets that hit the policy rule.",
                         lab, r["packets"])
            yield Metric("pydp_policy_rule_bytes_total", "Bytes that hit the policy rule.",
                         lab, r["bytes"])


register_provider("policy", policy_metrics)


def lb_metrics(dp: Any) -> Iterable[Metric]:
    """Per lb service and backend: packets, bytes (both directions, per-worker rows
    summed), flows assigned, live connections (gauge)."""
    from .table_stats import lb_stages, lb_stats
    if dp._cp is None:
        return
    for st in lb_stages(dp):
        for s in lb_stats(dp, st):
            for b in s["backends"]:
                lab = {"stage": st, "service": s["service"], "backend": b["backend"]}
                yield Metric("pydp_lb_backend_packets_total",
                             "Packets the load balancer translated for the backend (both "
                             "directions).", lab, b["packets"])
                yield Metric("pydp_lb_backend_bytes_total",
                             "Bytes the load balancer translated for the backend (both "
                             "directions).", lab, b["bytes"])
                yield Metric("pydp_lb_backend_connections_total",
                             "Flows the load balancer gave the backend.", lab,
                             b["connections_total"])
                yield Metric("pydp_lb_backend_connections",
                             "Live flows on the backend.", lab, b["connections"], "gauge")


def esp_metrics(dp: Any) -> Iterable[Metric]:
    """Per IPsec SA (by SPI, never a key): packets, bytes, drops by reason."""
    from .esp import esp_stages
    from .table_stats import sa_stats
    if dp._cp is None:
        return
    for st in esp_stages(dp):
        for sa in sa_stats(dp, st):
            lab = {"stage": st, "spi": sa["spi_hex"], "direction": sa["direction"]}
            yield Metric("pydp_esp_sa_packets_total",
                         "Packets the SA encrypted (out) or decrypted and passed (in).",
                         lab, sa["packets"])
            yield Metric("pydp_esp_sa_bytes_total",
                         "Inner IP bytes the SA encrypted or decrypted.", lab, sa["bytes"])
            for reason, n in sa["drops"].items():
                yield Metric("pydp_esp_sa_drops_total", "Packets of the SA dropped, by reason.",
                             {"stage": st, "spi": sa["spi_hex"], "reason": reason}, n)


register_provider("lb", lb_metrics)
register_provider("esp", esp_metrics)

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


def exposition(st: Stats, pipeline: str = "", extra: Iterable[Metric] = ()) -> str:
    """Render a :class:`Stats` snapshot (and providers' ``extra`` samples) as text format 0.0.4."""
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
    for m in extra:
        name = m.name if m.kind != "counter" or m.name.endswith("_total") else m.name + "_total"
        add(name, m.help, {**base, **{k: str(v) for k, v in m.labels.items()}}, m.value, m.kind)
    for name, (help_, kind, samples) in families.items():
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples)
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves /metrics from a background thread; binds 127.0.0.1 unless told otherwise."""

    def __init__(self, snapshot: Callable[[], Stats], port: int, host: str = "127.0.0.1",
                 pipeline: str = "", dp: Any = None) -> None:
        """Bind ``host:port`` (port 0 picks a free one: see :attr:`port`).

        ``dp``: the :class:`pydp.Dataplane` the registered metric providers read.
        """
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = outer.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.snapshot = snapshot
        self.pipeline = pipeline
        self.dp = dp
        self.provider_errors: dict[str, int] = {}
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="pydp-metrics")

    def render(self) -> str:
        """The exposition text of one scrape: counters, then every provider's samples."""
        extra: list[Metric] = []
        if self.dp is not None:
            extra, failed = collect(self.dp)
            for name in failed:
                self.provider_errors[name] = self.provider_errors.get(name, 0) + 1
            for name, n in self.provider_errors.items():
                extra.append(Metric("pydp_metrics_provider_errors_total",
                                    "Scrapes on which a metric provider failed.",
                                    {"provider": name}, n))
        return exposition(self.snapshot(), self.pipeline, extra)

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
