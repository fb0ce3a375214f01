"""``pydp service add|set|drain|remove|show``: services of a running dataplane.

Every command talks to ``pydp run``'s control socket; every change reports,
before it is committed, how many Maglev buckets and live flows it moves
(``--dry-run``: report only).
"""

from __future__ import annotations

import json
from typing import Any

import click

from .control import call
from .errors import ConfigError

_control = click.option("--control", default=None, metavar="PATH",
                        help="Control socket (default $PYDP_CONTROL or /run/pydp/pydp.sock).")
_dry = click.option("--dry-run", is_flag=True, help="Only report what would move.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")


def _report(res: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    verb = "committed" if res.get("committed") else "dry run"
    click.echo(f"{res['change']} ({verb})")
    for name, m in res.get("moves", {}).items():
        b = (f"{m['buckets_moved']}/{m['buckets']} Maglev buckets move, " if m["buckets"]
             else "")
        click.echo(f"  service {name}: {b}{m['flows']} live flows: {m['flows_moved']} would "
                   f"be balanced elsewhere (they stay on their backend), "
                   f"{m['flows_lost_backend']} on a backend that takes no new flows")


@click.group()
def service() -> None:
    """Services (VIP:port -> backends) of a running load balancer."""


@service.command("add")
@click.argument("name")
@click.argument("backend", required=False, metavar="[ADDR:PORT]")
@click.option("--weight", type=int, default=1, show_default=True)
@click.option("--vip", default=None, help="Add a service NAME with this VIP (no BACKEND).")
@click.option("--port", "port_", type=int, default=None, help="The service port.")
@click.option("--proto", default="tcp", show_default=True)
@click.option("--algorithm", default="maglev", show_default=True,
              help="maglev, wrr or least_conn.")
@click.option("--table-size", type=int, default=65537, show_default=True,
              help="Maglev table size (a prime).")
@click.option("--snat", default=None, metavar="ADDR", help="Source address towards backends.")
@_dry
@_json
@_control
def service_add(name: str, backend: str | None, weight: int, vip: str | None,
                port_: int | None, proto: str, algorithm: str, table_size: int,
                snat: str | None, dry_run: bool, as_json: bool, control: str | None) -> None:
    """Add backend ADDR:PORT to service NAME, or (with --vip/--port) add service NAME."""
    if vip is not None:
        if backend is not None:
            raise ConfigError("give either a BACKEND or --vip/--port, not both", key="vip")
        if port_ is None:
            raise ConfigError("--vip needs --port", key="port")
        svc: dict[str, Any] = {"name": name, "vip": vip, "port": port_, "proto": proto,
                               "algorithm": algorithm, "table_size": table_size}
        if snat:
            svc["snat"] = snat
        res = call("service.add", control, service=svc, dry_run=dry_run)
    else:
        if backend is None:
            raise ConfigError("give a BACKEND ADDR:PORT (or --vip and --port for a new "
                              "service)", key="backend")
        res = call("service.add", control, name=name, backend=backend, weight=weight,
                   dry_run=dry_run)
    _report(res, as_json)


@service.command("set")
@click.argument("name")
@click.argument("backend", metavar="ADDR:PORT")
@click.option("--weight", type=int, default=None)
@click.option("--state", type=click.Choice(["up", "drain", "down"]), default=None,
              help="down/up: health; drain: no new flows.")
@_dry
@_json
@_control
def service_set(name: str, backend: str, weight: int | None, state: str | None,
                dry_run: bool, as_json: bool, control: str | None) -> None:
    """Change a backend's weight or state."""
    _report(call("service.set", control, name=name, backend=backend, weight=weight,
                 state=state, dry_run=dry_run), as_json)


@service.command("drain")
@click.argument("name")
@click.argument("backend", metavar="ADDR:PORT")
@_dry
@_json
@_control
def service_drain(name: str, backend: str, dry_run: bool, as_json: bool,
                  control: str | None) -> None:
    """No new flows to BACKEND; its flows finish."""
    _report(call("service.drain", control, name=name, backend=backend, dry_run=dry_run),
            as_json)


@service.command("remove")
@click.argument("name")
@click.argument("backend", required=False, metavar="[ADDR:PORT]")
@_dry
@_json
@_control
def service_remove(name: str, backend: str | None, dry_run: bool, as_json: bool,
                   control: str | None) -> None:
    """Remove BACKEND from service NAME (its flows finish there), or the service."""
    _report(call("service.remove", control, name=name, backend=backend, dry_run=dry_run),
            as_json)


@service.command("show")
@click.argument("name", required=False)
@_json
@_control
def service_show(name: str | None, as_json: bool, control: str | None) -> None:
    """Services, backends, live connections."""
    res = call("service.show", control, name=name)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    for s in res["services"]:
        click.echo(f"service {s['name']}: {s['vip']}:{s['port']}/{s['proto']} "
                   f"{s['algorithm']}" + (f" snat {s['snat']}" if s.get("snat") else ""))
        for b in s["backends"]:
            click.echo(f"  {b['addr']}:{b['port']:<6} weight {b['weight']:<5} "
                       f"{b['state']:<5} conns {b['conns']:<8} assigned {b['assigned']}")
