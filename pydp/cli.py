"""The ``pydp`` command line.

Every command turns bad input (YAML, devargs, a missing port, not root) into
one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

import click

from .errors import ConfigError, PydpError

EXIT_BAD_INPUT = 2


class _Group(click.Group):
    """A click group that reports pydp errors as one line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI; click's own usage errors become one ``pydp: error:`` line too."""
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"pydp: error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"pydp: error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("pydp: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PydpError as e:
            click.echo(f"pydp: error: {e}", err=True)
            log = os.environ.get("PYDP_LAST_LOG")
            if log and os.path.exists(log) and os.path.getsize(log):
                click.echo(f"pydp: DPDK's log is in {log}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except OSError as e:
            what = f"{e.filename}: " if e.filename else ""
            click.echo(f"pydp: error: {what}{e.strerror or e}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pydp")
def main() -> None:
    """pydp: a DPDK fast-path dataplane with a Python control surface."""


def _need_root() -> None:
    if os.geteuid() != 0:
        from .errors import PermissionDenied
        raise PermissionDenied("this command needs root (DPDK maps hugepages and devices)")


def _parse_ports(specs: tuple[str, ...]) -> dict[str, str]:
    ports: dict[str, str] = {}
    for spec in specs:
        name, sep, dev = spec.partition("=")
        if not sep or not name or not dev:
            raise ConfigError(f"--port {spec!r}: expected NAME=DEVARGS, e.g. in=net_null0",
                              key="port")
        if name in ports:
            raise ConfigError(f"--port {name}: given twice", key="port")
        ports[name] = dev
    return ports


def _parse_lcores(spec: str | None) -> tuple[str | None, list[int] | None]:
    """--lcores '1,2' or '1-2' -> (EAL --lcores map, worker list)."""
    if not spec:
        return None, None
    workers: list[int] = []
    try:
        for part in spec.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                workers.extend(range(int(a), int(b) + 1))
            else:
                workers.append(int(part))
    except ValueError:
        raise ConfigError(f"--lcores {spec!r}: expected worker lcore ids like 1 or 1,2 or 1-3",
                          key="lcores") from None
    if not workers or min(workers) < 1 or len(set(workers)) != len(workers):
        raise ConfigError(f"--lcores {spec!r}: worker lcores are distinct ids >= 1 "
                          "(lcore 0 is the main lcore, kept by Python)", key="lcores")
    cpus = sorted(os.sched_getaffinity(0))
    mapping = [f"0@{cpus[0]}"] + [f"{w}@{w if w in cpus else cpus[-1]}" for w in workers]
    return ",".join(mapping), workers


def _check_metrics_addr(addr: str, port: int) -> None:
    """--metrics-addr must resolve and --metrics PORT must be free (before the EAL starts)."""
    import socket
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--metrics-addr {addr!r}: not an address here "
                          f"({getattr(e, 'strerror', None) or e})", key="metrics-addr") from None
    if port == 0:
        return
    fam, typ, proto, _, sa = infos[0]
    with socket.socket(fam, typ, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sa)
        except OSError as e:
            raise ConfigError(f"--metrics {port}: cannot listen on {addr}:{port} "
                              f"({e.strerror})", key="metrics") from None


def _check_devargs_files(name: str, dev: str) -> None:
    """A net_pcap rx_pcap= file must exist (else DPDK only says 'probe failed')."""
    for kv in dev.split(",")[1:]:
        key, _, value = kv.partition("=")
        if key == "rx_pcap" and value and not os.path.isfile(value):
            raise ConfigError(f"--port {name}: rx_pcap={value}: no such file", key="port")


def _start_eal(lcores: str | None, no_huge: bool, ports: dict[str, str]) -> None:
    from . import eal
    from .ports import is_pci, validate_devargs
    for name, dev in ports.items():
        try:
            validate_devargs(dev)
        except PydpError as e:
            raise ConfigError(f"--port {name}: {e}", key="port") from None
        _check_devargs_files(name, dev)
    log = os.path.join(tempfile.gettempdir(), f"pydp-dpdk-{os.getpid()}.log")
    os.environ["PYDP_LAST_LOG"] = log
    eal.init(lcores=lcores, hugepages=False if no_huge else None,
             pci=any(is_pci(d) for d in ports.values()), log_file=log)


def _run_loop(dp: Any, duration: float | None, until_idle: bool, idle: float,
              interval: float, out: Any, stop_when_sources_done: bool) -> str:
    """Run until a stop condition; return why it stopped."""
    stop = {"why": ""}

    def on_signal(signum: int, frame: Any) -> None:
        stop["why"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        dp.start()
        t0 = time.monotonic()
        prev = dp.stats()
        t_prev = t0
        last_rx, t_rx = prev.rx, t0
        while not stop["why"]:
            time.sleep(0.05)
            now = time.monotonic()
            cur = None
            if duration is not None and now - t0 >= duration:
                stop["why"] = "duration"
            if until_idle:
                cur = dp.stats()
                if cur.rx != last_rx:
                    last_rx, t_rx = cur.rx, now
                elif now - t_rx >= idle and (cur.rx > 0 or now - t0 >= max(2.0, idle)):
                    stop["why"] = "idle"
            if stop_when_sources_done and dp.sources_done():
                stop["why"] = "source done"
            if now - t_prev >= interval:
                cur = cur or dp.stats()
                click.echo(cur.line(prev, now - t_prev), file=out)
                prev, t_prev = cur, now
        dp.stop()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return stop["why"]


@main.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.option("--port", "port_specs", multiple=True, metavar="NAME=DEVARGS",
              help="Bind a pipeline port to a DPDK device (repeat per port).")
@click.option("--lcores", default=None, metavar="LIST",
              help="Worker lcores, e.g. 1 or 1,2 (lcore 0 stays with Python).")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--until-idle", is_flag=True, help="Stop once every rx port has been idle.")
@click.option("--idle", type=float, default=0.5, show_default=True, metavar="S",
              help="How long 'idle' is for --until-idle.")
@click.option("--json", "as_json", is_flag=True, help="Print final stats as one JSON document.")
@click.option("--generate", multiple=True, metavar="PORT",
              help="Feed PORT from the built-in template source instead of its rx.")
@click.option("--rate", type=float, default=0, metavar="PPS",
              help="Rate of --generate traffic (0: as fast as possible).")
@click.option("--count", type=int, default=0, help="Packets --generate sends (0: endless).")
@click.option("--interval", type=float, default=1.0, show_default=True, metavar="S",
              help="Seconds between stats lines.")
@click.option("--no-huge", is_flag=True, help="Run on 4 KiB pages even if hugepages exist.")
@click.option("--control", default=None, metavar="PATH",
              help="Control socket (default $PYDP_CONTROL or /run/pydp/pydp.sock).")
@click.option("--no-control", is_flag=True, help="Do not open a control socket.")
@click.option("--metrics", "metrics_port", type=click.IntRange(0, 65535), default=None,
              metavar="PORT", help="Serve Prometheus metrics on http://ADDR:PORT/metrics.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address for --metrics (loopback unless you say otherwise).")
@click.option("--stage-cycles", is_flag=True,
              help="Count TSC cycles per stage from the start (see pydp stats --stages).")
@click.option("--flow-log", default=None, metavar="FILE",
              help="Append a JSON line per flow start and end (conntrack stages) to FILE.")
def run(pipeline_file: str, port_specs: tuple[str, ...], lcores: str | None,
        duration: float | None, until_idle: bool, idle: float, as_json: bool,
        generate: tuple[str, ...], rate: float, count: int, interval: float,
        no_huge: bool, control: str | None, no_control: bool, metrics_port: int | None,
        metrics_addr: str, stage_cycles: bool, flow_log: str | None) -> None:
    """Run PIPELINE.yaml on NIC or virtual ports until Ctrl-C, --duration or --until-idle."""
    from .pipeline import Pipeline
    pl = Pipeline.load(pipeline_file)
    ports = _parse_ports(port_specs)
    for p in generate:
        if p not in pl.ports:
            raise ConfigError(f"--generate {p}: no port named '{p}' in {pipeline_file}",
                              key="generate")
        if p not in pl.input_map():
            raise ConfigError(f"--generate {p}: port '{p}' is transmit-only in {pipeline_file} "
                              f"(polled: {', '.join(pl.input_map())})", key="generate")
        ports.setdefault(p, f"net_null_gen_{p}")
    missing = [p for p in pl.ports if p not in ports]
    if missing:
        raise ConfigError(f"port '{missing[0]}' of {pipeline_file} has no device: add "
                          f"--port {missing[0]}=DEVARGS", key="port")
    extra = [p for p in ports if p not in pl.ports]
    if extra:
        raise ConfigError(f"--port {extra[0]}: {pipeline_file} has no port '{extra[0]}' "
                          f"(ports: {', '.join(pl.ports)})", key="port")
    if duration is not None and duration <= 0:
        raise ConfigError("--duration must be positive", key="duration")
    for flag, value in (("--interval", interval), ("--idle", idle)):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g}: must be positive (seconds)", key=flag[2:])
    for flag, value in (("--rate", rate), ("--count", count)):
        if value < 0:
            raise ConfigError(f"{flag} {value:g}: must not be negative", key=flag[2:])
    if (rate or count) and not generate:
        raise ConfigError(f"--{'rate' if rate else 'count'}: only applies to --generate "
                          "traffic (add --generate PORT)", key="generate")
    if metrics_port is not None:
        _check_metrics_addr(metrics_addr, metrics_port)
    if flow_log and not any(st.TYPE in ("conntrack", "policy") for st in pl.stages):
        raise ConfigError(f"--flow-log: {pipeline_file} has no conntrack or policy stage "
                          "(flows and denies are what it logs)", key="flow-log")
    _need_root()
    eal_lcores, workers = _parse_lcores(lcores)
    _start_eal(eal_lcores, no_huge, ports)
    _execute(pl, ports, workers, duration, until_idle, idle, as_json, generate, rate, count,
             interval, None if no_control else (control or ""),
             None if metrics_port is None else (metrics_addr, metrics_port),
             stage_cycles=stage_cycles, flow_log=flow_log)


def serve_dataplane(dp: Any, ports: dict[str, str], path: str | None) -> Any:
    """Open the control socket of a running dataplane and register its commands."""
    from . import eal
    from .control import ControlServer
    srv = ControlServer(path or None)
    info = eal.info()
    from .table_stats import sections

    def stats_cmd() -> dict:
        # counters, and per service/backend and per SA when the pipeline has them
        return {**dp.stats().to_dict(), **sections(dp)}
    srv.register("stats", stats_cmd)
    from . import esp  # ESP: SAs by stage, and no key in anything shown
    srv.register("pipeline", lambda: esp.redact_keys(dp.pipeline.to_dict()))
    srv.register("sas", lambda: esp.state(dp))
    srv.register("info", lambda: {
        "pipeline": dp.pipeline.name, "lcores": dp.lcores, "ports": ports,
        "memory": info.memory if info else "", "running": dp.running, "pid": os.getpid()})

    def stage_cycles_cmd(on: bool) -> dict:
        return {"stage_cycles": bool(on), "was": dp.set_stage_cycles(bool(on))}
    srv.register("stage_cycles", stage_cycles_cmd)
    ct_stages = [st.name for st in dp.pipeline.stages if st.TYPE == "conntrack"]
    if ct_stages:
        from . import flows as fl

        def flows_cmd(stage: str | None = None, addr: str | None = None,
                      port: int | None = None, state: str | None = None,
                      limit: int = 1000) -> dict:
            name = stage or ct_stages[0]
            if name not in ct_stages:
                from .errors import InvalidArgument
                raise InvalidArgument(f"no conntrack stage '{name}' ({', '.join(ct_stages)})")
            recs = fl.flows(dp, name)
            return {"stage": name, "total": len(recs),
                    "flows": fl.records(recs, addr, port, state, limit)}
        srv.register("flows", flows_cmd)
    if any(st.TYPE == "policy" for st in dp.pipeline.stages):
        from .policy.service import PolicyService
        dp.services.setdefault("policy", PolicyService(dp)).register(srv)
    if any(st.TYPE == "lb" for st in dp.pipeline.stages):
        from .lb.service import Services
        Services(dp).register(srv)
    from .obs_service import ObsService
    ObsService(dp).register(srv)
    srv.start()
    return srv


def _execute(pl: Any, ports: dict[str, str], workers: list[int] | None,
             duration: float | None, until_idle: bool, idle: float, as_json: bool,
             generate: tuple[str, ...], rate: float, count: int, interval: float,
             control: str | None = None, metrics: tuple[str, int] | None = None,
             stage_cycles: bool = False, flow_log: str | None = None) -> None:
    from contextlib import nullcontext

    from . import eal
    from .demo import demo_source
    from .flowlog import FlowLog
    from .metrics import MetricsServer
    from .runtime import Dataplane
    out = sys.stderr if as_json else sys.stdout
    sources = {p: demo_source(rate_pps=rate, count=count) for p in generate}
    info = eal.info()
    with Dataplane(pl, ports, workers=workers or 1, sources=sources) as dp, \
            (serve_dataplane(dp, ports, control) if control is not None
             else nullcontext()) as srv, \
            (MetricsServer(dp.stats, metrics[1], metrics[0], pl.name, dp=dp) if metrics
             else nullcontext()) as ms, \
            (FlowLog(dp, flow_log) if flow_log or any(st.TYPE == "conntrack"
                                                      for st in pl.stages)
             else nullcontext()) as flog:
        if ms:
            ms.start()
        if flog:
            flog.start()  # ages the flow tables; logs flows with --flow-log
        if stage_cycles:
            dp.set_stage_cycles(True)
        click.echo(f"pydp: pipeline '{pl.name}' on lcores {dp.lcores}, memory: "
                   f"{info.memory if info else '?'}; ports: "
                   + ", ".join(f"{n}={d}" for n, d in ports.items())
                   + (f"; control: {srv.path}" if srv else "")
                   + (f"; metrics: http://{ms.host}:{ms.port}/metrics" if ms else ""), file=out)
        why = _run_loop(dp, duration, until_idle, idle, interval, out,
                        stop_when_sources_done=bool(generate) and count > 0)
        st = dp.stats()
        in_use = dp.pool.in_use()  # workers stopped: every mbuf is back unless one leaked
        if in_use:
            click.echo(f"pydp: warning: mbuf leak: {in_use} of {dp.pool.size()} mbufs still "
                       "in use after stop", file=sys.stderr)
        if as_json:
            doc = st.to_dict()
            doc["pipeline"] = pl.name
            doc["stopped_by"] = why
            from .table_stats import sections
            doc.update(sections(dp))  # per service/backend and per SA, when present
            doc["pool"] = {"mbufs": dp.pool.size(), "in_use_after_stop": in_use}
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(f"pydp: stopped ({why})", file=out)
            click.echo(st.summary(), file=out)
        if why in ("SIGINT", "SIGTERM"):
            click.echo(f"pydp: workers drained, ports closed after {why}", file=sys.stderr)


@main.command()
@click.option("--duration", type=float, default=5.0, show_default=True, metavar="S")
@click.option("--rate", type=float, default=0, metavar="PPS",
              help="Source rate (0: as fast as one core goes).")
@click.option("--json", "as_json", is_flag=True)
def demo(duration: float, rate: float, as_json: bool) -> None:
    """The default pipeline (pipelines/forward.yaml) on virtual ports with live traffic.

    Port `in` is fed by the C template source (10k flows, a few malformed
    packets), port `out` is a net_null sink. Prints a stats line every
    second and a summary when it ends by itself.
    """
    from .pipeline import Pipeline
    path = _pipeline_path("forward.yaml")
    pl = Pipeline.load(path)
    _need_root()
    ports = {"in": "net_null_demo_in", "out": "net_null_demo_out,no-rx=1"}
    _start_eal(None, False, ports)
    _execute(pl, ports, None, duration, False, 0.5, as_json, ("in",), rate, 0, 1.0)


def _pipeline_path(name: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(os.getcwd(), "pipelines", name),
                 os.path.join(here, "..", "pipelines", name),
                 os.path.join(here, "pipelines", name)):
        if os.path.exists(cand):
            return os.path.normpath(cand)
    raise ConfigError(f"cannot find pipelines/{name}", file=name)


@main.command()
@click.option("--control", default=None, metavar="PATH", help="Control socket of the dataplane.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", type=float, default=1.0, show_default=True, metavar="S")
@click.option("--stages", "stage_table", is_flag=True,
              help="Cycles per packet of each stage over one --interval (switches the "
                   "dataplane's stage_cycles on for it if it is off).")
def stats(control: str | None, as_json: bool, watch: bool, interval: float,
          stage_table: bool) -> None:
    """Counters of a running dataplane: per port, per stage, per drop reason."""
    from .control import ControlClient
    from .stats import Stats
    if not interval > 0:
        raise ConfigError(f"--interval {interval:g}: must be positive (seconds)", key="interval")
    if stage_table:
        _stats_stages(control, as_json, interval)
        return
    with ControlClient(control) as c:
        while True:
            doc = c.call("stats")
            if as_json:
                click.echo(json.dumps(doc, indent=None if watch else 2))
            else:
                if watch:
                    click.clear()
                click.echo(Stats.from_dict(doc).summary())
                from .table_stats import summary
                extra = summary(doc)
                if extra:
                    click.echo(extra)
            if not watch:
                return
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return


def _stats_stages(control: str | None, as_json: bool, interval: float) -> None:
    """``pydp stats --stages``: per stage packets in and cycles/packet over one interval."""
    from .control import call
    from .stats import Stats
    if interval <= 0:
        raise ConfigError("--interval must be positive", key="interval")
    # one-shot calls: the socket is not held across the interval
    was = call("stage_cycles", control, on=True)["was"]
    try:
        before = Stats.from_dict(call("stats", control))
        time.sleep(interval)
        doc = call("stats", control)
    finally:
        if not was:  # leave the dataplane as we found it
            call("stage_cycles", control, on=False)
    after = Stats.from_dict(doc)
    cost = after.stage_cost(since=before)
    st_a, st_b = after.stages(), before.stages()
    pkts = {n: s["in"] - st_b.get(n, {}).get("in", 0) for n, s in st_a.items()}
    if as_json:
        doc["stage_cost"] = cost
        doc["stage_cost_interval_s"] = interval
        doc["stage_cost_packets"] = pkts
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"stage cost over {interval:g} s (TSC cycles per packet in):")
    click.echo(f"  {'stage':<16} {'packets in':>14} {'cycles/pkt':>12}")
    for name in st_a:
        click.echo(f"  {name:<16} {pkts[name]:>14} {cost[name]:>12.1f}")


def _is_policy_file(path: str) -> bool:
    """A mapping with policy keys (identities/rules) and no pipeline keys (stages/ports)."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, UnicodeError, yaml.YAMLError):
        return False  # Pipeline.load reports it, naming the file and line
    return (isinstance(doc, dict) and not {"stages", "ports"} & doc.keys()
            and bool({"identities", "rules"} & doc.keys()))


@main.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.option("--json", "as_json", is_flag=True, help="Print the validated pipeline as JSON.")
def check(pipeline_file: str, as_json: bool) -> None:
    """Validate PIPELINE.yaml (or a policy file, e.g. pipelines/policies/*.yaml) offline."""
    from .pipeline import Pipeline
    if _is_policy_file(pipeline_file):
        from .policy.model import Policy
        pol = Policy.load(pipeline_file)
        if as_json:
            click.echo(json.dumps(pol.to_data(), indent=2))
        else:
            click.echo(f"policy '{pol.name}': {len(pol.identities)} identities, "
                       f"{len(pol.rules)} rules, default {pol.default}")
            click.echo(f"{pipeline_file}: OK")
        return
    pl = Pipeline.load(pipeline_file)
    for st in pl.stages:  # a policy stage's file is read at run time: check it now
        if st.TYPE == "policy" and st.policy:
            from .policy.model import Policy
            path = st.policy_path()
            if not os.path.isfile(path):
                raise ConfigError(f"stage '{st.name}': policy: {path}: no such file",
                                  file=pipeline_file, key="policy")
            Policy.load(path)
    if as_json:
        click.echo(json.dumps(pl.to_dict(), indent=2))
    else:
        click.echo(pl.describe())
        click.echo(f"{pipeline_file}: OK")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def ports(as_json: bool) -> None:
    """List the NICs DPDK could drive (PCI address, driver, bound or not)."""
    from dataclasses import asdict

    from .devbind import format_table, list_nics
    nics = list_nics()
    if as_json:
        click.echo(json.dumps([asdict(n) for n in nics], indent=2))
    else:
        click.echo(format_table(nics))


@main.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.option("--duration", type=float, default=2.0, show_default=True, metavar="S",
              help="Seconds per measurement.")
@click.option("--flows", type=click.IntRange(1, 1 << 20), default=10000, show_default=True)
@click.option("--size", "pkt_size", type=click.IntRange(64, 1518), default=64,
              show_default=True, help="Ethernet frame size with FCS (RFC 2544).")
@click.option("--repeat", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Runs of each of baseline, pipeline and source, alternating; the "
                   "figures are their medians.")
@click.option("--json", "as_json", is_flag=True)
def bench(pipeline_file: str, duration: float, flows: int, pkt_size: int,
          repeat: int, as_json: bool) -> None:
    """Measure PIPELINE.yaml in Mpps and cycles/packet against the bare rx->tx loop."""
    from .bench import format_bench, run_bench
    from .pipeline import Pipeline
    pl = Pipeline.load(pipeline_file)
    if not duration > 0:
        raise ConfigError(f"--duration {duration:g}: must be positive (seconds)",
                          key="duration")
    _need_root()
    _start_eal(None, False, {})
    res = run_bench(pl, duration=duration, flows=flows, pkt_size=pkt_size, repeat=repeat)
    click.echo(json.dumps(res, indent=2) if as_json else format_bench(res))


@main.command()
@click.option("--control", default=None, metavar="PATH", help="Control socket of the dataplane.")
@click.option("--stage", default=None, help="Conntrack stage (default: the first).")
@click.option("--addr", default=None, help="Only flows with this address on either side.")
@click.option("--port", "port_", type=click.IntRange(0, 65535), default=None,
              help="Only flows with this port.")
@click.option("--state", default=None,
              help="new, established, closing, or a TCP state (syn_sent, fin_wait...).")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def flows(control: str | None, stage: str | None, addr: str | None, port_: int | None,
          state: str | None, limit: int, as_json: bool) -> None:
    """The flow table of a running dataplane."""
    from .control import call
    if addr is not None:
        import ipaddress
        try:
            addr = str(ipaddress.ip_address(addr))
        except ValueError:
            raise ConfigError(f"--addr {addr!r}: not an IPv4 or IPv6 address",
                              key="addr") from None
    res = call("flows", control, stage=stage, addr=addr, port=port_, state=state, limit=limit)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"stage {res['stage']}: {res['total']} flows, {len(res['flows'])} shown")
    for f in res["flows"]:
        click.echo(f"  {f['proto']:>3} {f['src']}:{f['sport']} -> {f['dst']}:{f['dport']} "
                   f"{f.get('tcp_state', f['state']):<11} pkts {f['packets_orig']}/"
                   f"{f['packets_reply']} bytes {f['bytes_orig']}/{f['bytes_reply']} "
                   f"idle {f['idle_ms']} ms"
                   + (f" nat {f['nat']['src']}:{f['nat']['sport']} -> {f['nat']['dst']}:"
                      f"{f['nat']['dport']}" if f.get("nat") else ""))


@main.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.option("-o", "--output", required=True, metavar="FILE.png|svg|dot")
@click.option("--control", default=None, metavar="PATH",
              help="Attach to a running dataplane: live counters on the edges.")
def graph(pipeline_file: str, output: str, control: str | None) -> None:
    """Draw the pipeline graph (Graphviz); with --control, with live counters."""
    from .pipeline_graph import cli_graph
    click.echo(cli_graph(pipeline_file, output, control))


@main.group()
def policy() -> None:
    """Zero-trust policy: apply, diff, show and stats on a running dataplane; import, graph."""


_control_opt = click.option("--control", default=None, metavar="PATH",
                            help="Control socket of the dataplane.")
_stage_opt = click.option("--stage", default=None, help="Policy stage (if several).")


@policy.command("apply")
@click.argument("policy_file", metavar="POLICY.yaml")
@_control_opt
@_stage_opt
@click.option("--json", "as_json", is_flag=True)
def policy_apply(policy_file: str, control: str | None, stage: str | None,
                 as_json: bool) -> None:
    """Validate, compile and publish POLICY.yaml; on any error the old policy stays."""
    from .control import call
    from .policy.service import read_policy_text
    text, name = read_policy_text(policy_file)
    res = call("policy.apply", control, text=text, name=name, stage=stage)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(res["text"])
        click.echo(f"applied to stage '{res['stage']}': {res['rules']} rules, "
                   f"{res['acl_rules']} ACL entries, {res['seconds'] * 1000:.1f} ms")


@policy.command("diff")
@click.argument("policy_file", metavar="POLICY.yaml")
@_control_opt
@_stage_opt
@click.option("--json", "as_json", is_flag=True)
def policy_diff(policy_file: str, control: str | None, stage: str | None,
                as_json: bool) -> None:
    """Dry run: rules added/removed/changed and reach gained/lost, nothing applied."""
    from .control import call
    from .policy.service import read_policy_text
    text, name = read_policy_text(policy_file)
    res = call("policy.diff", control, text=text, name=name, stage=stage)
    click.echo(json.dumps(res["diff"], indent=2) if as_json else res["text"])


@policy.command("show")
@_control_opt
@_stage_opt
def policy_show(control: str | None, stage: str | None) -> None:
    """Print the live policy as YAML."""
    from .control import call
    click.echo(call("policy.show", control, stage=stage)["yaml"], nl=False)


@policy.command("stats")
@_control_opt
@_stage_opt
@click.option("--json", "as_json", is_flag=True)
def policy_stats(control: str | None, stage: str | None, as_json: bool) -> None:
    """Hit counters per rule (packets, bytes) and the stage's drops."""
    from .control import call
    res = call("policy.stats", control, stage=stage)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"stage {res['stage']}:")
    for r in res["rules"]:
        click.echo(f"  {r['rule']:<28} {r['action']:<6} {r['packets']:>12} pkts "
                   f"{r['bytes']:>14} bytes")
    for k, v in res["drops"].items():
        click.echo(f"  drop {k:<23} {v:>12}")


@policy.command("import-k8s")
@click.argument("policy_files", nargs=-1, required=True, metavar="NETWORKPOLICY.yaml...")
@click.option("--inventory", required=True, metavar="FILE", help="Pods: namespace, labels, IPs.")
@click.option("-o", "--output", default=None, metavar="FILE", help="Write the pydp policy here.")
def policy_import_k8s(policy_files: tuple[str, ...], inventory: str, output: str | None) -> None:
    """Convert networking.k8s.io/v1 NetworkPolicy objects into a pydp policy."""
    from .policy.k8s import import_k8s
    pol, warnings = import_k8s(list(policy_files), inventory)
    text = pol.to_yaml()
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"wrote {output}: {len(pol.rules)} rules", err=True)
    else:
        click.echo(text, nl=False)
    for w in warnings:
        click.echo(f"pydp: unsupported: {w}", err=True)


@policy.command("graph")
@click.argument("policy_file", metavar="POLICY.yaml")
@click.option("-o", "--output", required=True, metavar="FILE.png|svg|dot")
def policy_graph(policy_file: str, output: str) -> None:
    """Draw which identities may reach which, on which ports (Graphviz)."""
    from .policy.graph import render, to_dot
    from .policy.model import Policy
    pol = Policy.load(policy_file)
    if output.endswith(".dot"):
        with open(output, "w", encoding="utf-8") as f:
            f.write(to_dot(pol))
    else:
        render(pol, output)
    click.echo(f"wrote {output}")


@main.group()
def testbed() -> None:
    """Network-namespace topologies to run pydp between real hosts."""


@testbed.command("up")
@click.argument("name", default="two-host")
def testbed_up(name: str) -> None:
    """Create topology NAME (default two-host)."""
    from . import testbed as tb
    topo = tb.up(name)
    click.echo(topo.describe())


@testbed.command("down")
@click.argument("name", default="two-host")
def testbed_down(name: str) -> None:
    """Remove topology NAME."""
    from . import testbed as tb
    tb.down(name)
    click.echo(f"testbed {name}: down")


from .cli_obs import register as _register_obs  # noqa: E402 - after main exists

_register_obs(main)

from .cli_service import service as _service  # noqa: E402 - pydp service ...

main.add_command(_service)

from .cli_tunnel import tunnel as _tunnel  # noqa: E402 - pydp tunnel ... (pydp/cli_tunnel.py)

main.add_command(_tunnel)

if __name__ == "__main__":  # pragma: no cover
    main()
