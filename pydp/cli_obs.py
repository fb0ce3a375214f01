"""CLI commands of observability: ``pydp trace``, ``pydp capture``, ``pydp top``.

Each talks to a running ``pydp run`` over its control socket
(:mod:`pydp.obs_service` serves the other end).
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from .errors import ConfigError

_control_opt = click.option("--control", default=None, metavar="PATH",
                            help="Control socket of the dataplane.")


@click.command()
@click.option("--count", type=click.IntRange(1, 4096), default=10, show_default=True,
              help="Packets to trace.")
@click.option("--filter", "filter_", default=None, metavar="EXPR",
              help="pcap-filter expression, as tcpdump takes (e.g. 'udp and port 53').")
@click.option("--timeout", type=float, default=10.0, show_default=True, metavar="S",
              help="Give up waiting after S seconds (prints what it has).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@_control_opt
def trace(count: int, filter_: str | None, timeout: float, as_json: bool,
          control: str | None) -> None:
    """Trace the next COUNT matching packets: stages, verdict, table hits (as VPP's trace)."""
    from .control import ControlClient
    from .trace import TraceRecord
    if timeout <= 0:
        raise ConfigError("--timeout must be positive", key="timeout")
    recs: list[dict] = []
    with ControlClient(control) as c:
        c.call("trace.start", count=count, filter=filter_)
        deadline = time.monotonic() + timeout
        try:
            while len(recs) < count and time.monotonic() < deadline:
                res = c.call("trace.read")
                recs.extend(res["records"])
                if len(recs) < count:
                    time.sleep(0.05)
            recs.extend(c.call("trace.read")["records"])
        finally:
            c.call("trace.stop")
    if as_json:
        click.echo(json.dumps({"count": count, "filter": filter_ or "", "records": recs},
                              indent=2))
        return
    for r in recs:
        click.echo(TraceRecord.from_dict(r).format())
        click.echo("")
    click.echo(f"{len(recs)} of {count} packets traced"
               + ("" if len(recs) >= count else f" (timeout after {timeout:g} s)"),
               err=len(recs) < count)


@click.command()
@click.option("--port", default=None, metavar="NAME", help="Capture what this port receives "
              "and sends.")
@click.option("--stage", default=None, metavar="NAME", help="Capture what enters this stage.")
@click.option("-w", "--write", "path", required=True, metavar="FILE.pcapng",
              help="Output file (pcapng; tshark and Wireshark read it).")
@click.option("--count", type=click.IntRange(0), default=0, show_default=True,
              help="Stop after N packets (0: until --duration or Ctrl-C).")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--snaplen", type=click.IntRange(0, 65535), default=0,
              help="Bytes kept per packet (0: whole frames).")
@click.option("--filter", "filter_", default=None, metavar="EXPR",
              help="pcap-filter expression (as tcpdump).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_control_opt
def capture(port: str | None, stage: str | None, path: str, count: int,
            duration: float | None, snaplen: int, filter_: str | None, as_json: bool,
            control: str | None) -> None:
    """Capture a port's or a stage's packets from a running dataplane into a pcapng file."""
    from .control import ControlClient
    if (port is None) == (stage is None):
        raise ConfigError("give --port NAME or --stage NAME (one of them)", key="port")
    if not path.endswith(".pcapng"):
        raise ConfigError(f"-w {path}: the file is pcapng; name it FILE.pcapng", key="write")
    if duration is not None and duration <= 0:
        raise ConfigError("--duration must be positive", key="duration")
    if count == 0 and duration is None and not sys.stdin.isatty():
        raise ConfigError("without a terminal give --count or --duration", key="count")
    path = os.path.abspath(path)
    with ControlClient(control) as c:
        c.call("capture.start", path=path, port=port, stage=stage, count=count,
               snaplen=snaplen, filter=filter_)
        t0 = time.monotonic()
        try:
            while True:
                st = c.call("capture.status")
                if count and st["done"]:
                    break
                if duration is not None and time.monotonic() - t0 >= duration:
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        res = c.call("capture.stop")
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(f"wrote {res['written']} packets to {res['path']}"
                   + (f" ({res['dropped']} lost: capture ring full)" if res["dropped"] else ""))


@click.command()
@click.option("--interval", type=float, default=1.0, show_default=True, metavar="S")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--iterations", type=click.IntRange(0), default=0, metavar="N",
              help="Print N frames and exit (0: until Ctrl-C).")
@click.option("--flows", "n_flows", type=click.IntRange(0), default=10, show_default=True,
              help="Top flows to show.")
@_control_opt
def top(interval: float, once: bool, iterations: int, n_flows: int,
        control: str | None) -> None:
    """Live view of a running dataplane: ports, stages, services and SAs, top flows."""
    from . import top as tp
    from .control import ControlClient
    if interval <= 0:
        raise ConfigError("--interval must be positive", key="interval")
    with ControlClient(control) as c:
        tp.run(lambda: c.call("top", flows=n_flows), sys.stdout, interval,
               1 if once else iterations, clear=sys.stdout.isatty() and not once)


def register(main: click.Group) -> None:
    """Add trace, capture and top to the ``pydp`` group."""
    for cmd in (trace, capture, top):
        main.add_command(cmd)
