"""``pydp tunnel``: the mesh CA, running a tunnel node, and inspecting one.

::

    pydp tunnel ca init DIR [--trust-domain mesh.local]
    pydp tunnel ca issue DIR NODE [--out DIR] [--days 30]
    pydp tunnel ca revoke DIR NODE | --serial HEX
    pydp tunnel ca crl|list DIR
    pydp tunnel check CONFIG
    pydp tunnel run [PIPELINE.yaml --port NAME=DEVARGS ...] --tunnel CONFIG
    pydp tunnel show|rekey|rotate|reload|deny ... [--control PATH]
    pydp tunnel testbed up DIR | down
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import click

from .errors import ConfigError

_control_opt = click.option("--control", default=None, metavar="PATH",
                            help="Control socket of the tunnel node.")


@click.group()
def tunnel() -> None:
    """Encrypted tunnels between mesh nodes: CA, node, show, rekey, rotate, revoke."""


@tunnel.group()
def ca() -> None:
    """The mesh CA: init, issue node certificates, revoke them."""


@ca.command("init")
@click.argument("directory", metavar="DIR")
@click.option("--trust-domain", default="mesh.local", show_default=True)
@click.option("--days", type=int, default=3650, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing CA (every node must re-enrol).")
def ca_init(directory: str, trust_domain: str, days: int, force: bool) -> None:
    """Create a CA in DIR: ca.key (0600), ca.crt, an empty crl.pem."""
    from .tunnel.ca import MeshCA
    c = MeshCA.init(directory, trust_domain, days, force)
    click.echo(f"CA for spiffe://{c.trust_domain} in {c.dir} (serial "
               f"{c.cert.serial_number:x}, valid until "
               f"{c.cert.not_valid_after_utc.date().isoformat()})")


@ca.command("issue")
@click.argument("directory", metavar="DIR")
@click.argument("node")
@click.option("--out", "out_dir", default=None, metavar="DIR",
              help="Where NODE.crt and NODE.key go (default DIR/nodes).")
@click.option("--days", type=float, default=30, show_default=True)
def ca_issue(directory: str, node: str, out_dir: str | None, days: float) -> None:
    """Issue a certificate for NODE (again for the same NODE: a rotation)."""
    from .tunnel.ca import MeshCA, load_cert
    c = MeshCA(directory)
    crt, key = c.issue(node, out_dir, days)
    cert = load_cert(crt)
    click.echo(f"issued spiffe://{c.trust_domain}/node/{node} serial {cert.serial_number:x} "
               f"until {cert.not_valid_after_utc.isoformat()}: {crt}, {key} (0600)")


@ca.command("revoke")
@click.argument("directory", metavar="DIR")
@click.argument("node", required=False)
@click.option("--serial", default=None, metavar="HEX", help="Revoke one certificate only.")
def ca_revoke(directory: str, node: str | None, serial: str | None) -> None:
    """Revoke NODE's certificates (or one --serial) and re-issue DIR/crl.pem."""
    from .tunnel.ca import MeshCA
    c = MeshCA(directory)
    new = c.revoke(node, serial)
    what = node or serial
    if new:
        click.echo(f"revoked {what}: serial {', '.join(new)}; CRL {c.dir / 'crl.pem'}")
    else:
        click.echo(f"{what}: already revoked; CRL {c.dir / 'crl.pem'}")


@ca.command("list")
@click.argument("directory", metavar="DIR")
@click.option("--json", "as_json", is_flag=True)
def ca_list(directory: str, as_json: bool) -> None:
    """Every certificate the CA issued: node, serial, validity, revoked or not."""
    from .tunnel.ca import MeshCA
    rec = MeshCA(directory).issued()
    if as_json:
        click.echo(json.dumps(rec, indent=2, sort_keys=True))
        return
    for serial, r in sorted(rec.items(), key=lambda x: (x[1]["node"], x[1]["not_before"])):
        click.echo(f"{r['node']:<16} {serial}  {r['not_before'][:19]} .. {r['not_after'][:19]}"
                   + (f"  REVOKED {r['revoked'][:19]}" if r.get("revoked") else ""))


@ca.command("crl")
@click.argument("directory", metavar="DIR")
@click.option("--days", type=int, default=7, show_default=True,
              help="Until its nextUpdate.")
def ca_crl(directory: str, days: int) -> None:
    """Re-issue DIR/crl.pem before its nextUpdate (nodes re-read it when it changes)."""
    from .tunnel.ca import MeshCA
    c = MeshCA(directory)
    p = c.refresh_crl(days)
    click.echo(f"CRL {p}: {sum(1 for r in c.issued().values() if r.get('revoked'))} revoked, "
               f"valid {days} days")


@tunnel.command("check")
@click.argument("config", metavar="CONFIG.yaml")
def check(config: str) -> None:
    """Validate a tunnel config: schema, certificate, key, CA and CRL."""
    from .tunnel.ca import NodeIdentity, TrustStore
    from .tunnel.config import TunnelConfig
    cfg = TunnelConfig.load(config)
    trust = TrustStore(cfg.ca, cfg.crl, set(cfg.deny))
    me = NodeIdentity.load(cfg.cert, cfg.key, trust.trust_domain)
    trust.verify(me.cert, expect=cfg.node or me.node)
    click.echo(f"{config}: OK, node {me.node}, {len(cfg.peers)} peers "
               f"({', '.join(p.node for p in cfg.peers)})")


def _call(cmd: str, control: str | None, **args: Any) -> Any:
    """A tunnel.* control call; a dataplane without a tunnel manager gets a clear line."""
    from .control import call
    from .errors import NotFound
    try:
        return call(cmd, control, **args)
    except NotFound as e:
        if "unknown command" in str(e):
            raise NotFound("this dataplane runs no tunnel manager (start the node with "
                           "`pydp tunnel run ... --tunnel CONFIG`)") from None
        raise


def _wait(stop_after: float | None, dp: Any = None, interval: float = 1.0) -> str:
    stop = {"why": ""}

    def on_signal(signum: int, frame: Any) -> None:
        stop["why"] = signal.Signals(signum).name
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        t0 = time.monotonic()
        while not stop["why"]:
            time.sleep(0.05)
            if stop_after is not None and time.monotonic() - t0 >= stop_after:
                stop["why"] = "duration"
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return stop["why"]


@tunnel.command("run")
@click.argument("pipeline_file", metavar="[PIPELINE.yaml]", required=False)
@click.option("--tunnel", "tunnel_file", required=True, metavar="CONFIG.yaml",
              help="The node's tunnel config (identity, peers, lifetimes).")
@click.option("--port", "port_specs", multiple=True, metavar="NAME=DEVARGS",
              help="Bind a pipeline port to a DPDK device (repeat per port).")
@click.option("--lcores", default=None, metavar="LIST", help="Worker lcores, e.g. 1.")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--interval", type=float, default=5.0, show_default=True, metavar="S",
              help="Seconds between stats lines.")
@click.option("--no-huge", is_flag=True, help="Run on 4 KiB pages even if hugepages exist.")
@_control_opt
def run(pipeline_file: str | None, tunnel_file: str, port_specs: tuple[str, ...],
        lcores: str | None, duration: float | None, interval: float, no_huge: bool,
        control: str | None) -> None:
    """Run a tunnel node: PIPELINE.yaml's ESP stages get their SAs from the handshakes.

    Without PIPELINE.yaml the node only runs the handshakes and keeps the SAs
    in memory (no DPDK): useful to check certificates and reachability.
    """
    from . import cli as base
    from .control import ControlServer
    from .tunnel import service
    from .tunnel.config import TunnelConfig
    from .tunnel.manager import TunnelManager
    from .tunnel.sink import MemorySink
    if duration is not None and duration <= 0:
        raise ConfigError("--duration must be positive", key="duration")
    if not interval > 0:
        raise ConfigError(f"--interval {interval:g}: must be positive (seconds)", key="interval")
    cfg = TunnelConfig.load(tunnel_file)
    if pipeline_file is None:
        if port_specs:
            raise ConfigError("--port needs a PIPELINE.yaml", key="port")
        with ControlServer(control or None) as srv, TunnelManager(cfg, MemorySink()) as mgr:
            service.register(srv, mgr)
            srv.start()
            mgr.start()
            click.echo(f"pydp: tunnel node {mgr.me.node} (handshakes only, SAs in memory); "
                       f"handshake {cfg.listen[0]}:{cfg.listen[1]}; control: {srv.path}")
            why = _wait(duration)
        click.echo(f"pydp: stopped ({why}); SAs removed, keys wiped")
        return
    from .pipeline import Pipeline
    from .runtime import Dataplane
    pl = Pipeline.load(pipeline_file)
    ports = base._parse_ports(port_specs)
    missing = [p for p in pl.ports if p not in ports]
    if missing:
        raise ConfigError(f"port '{missing[0]}' of {pipeline_file} has no device: add "
                          f"--port {missing[0]}=DEVARGS", key="port")
    extra = [p for p in ports if p not in pl.ports]
    if extra:
        raise ConfigError(f"--port {extra[0]}: {pipeline_file} has no port '{extra[0]}'",
                          key="port")
    base._need_root()
    eal_lcores, workers = base._parse_lcores(lcores)
    base._start_eal(eal_lcores, no_huge, ports)
    out = sys.stdout
    with Dataplane(pl, ports, workers=workers or 1) as dp, \
            base.serve_dataplane(dp, ports, control or "") as srv, \
            TunnelManager(cfg, dp) as mgr:
        service.register(srv, mgr)
        mgr.start()
        click.echo(f"pydp: tunnel node {mgr.me.node}, pipeline '{pl.name}' on lcores "
                   f"{dp.lcores}; ports: " + ", ".join(f"{n}={d}" for n, d in ports.items())
                   + f"; handshake {cfg.listen[0]}:{cfg.listen[1]}; control: {srv.path}",
                   file=out)
        out.flush()
        why = base._run_loop(dp, duration, False, 0.5, interval, out, False)
        click.echo(f"pydp: stopped ({why})", file=out)
        click.echo(dp.stats().summary(), file=out)


@tunnel.command("show")
@_control_opt
@click.option("--json", "as_json", is_flag=True)
def show(control: str | None, as_json: bool) -> None:
    """The node's tunnels and SAs: SPIs, counters, lifetimes (never keys)."""
    from .tunnel.service import format_show
    doc = _call("tunnel.show", control)
    click.echo(json.dumps(doc, indent=2) if as_json else format_show(doc))


@tunnel.command("rekey")
@click.argument("peer", required=False)
@_control_opt
def rekey(peer: str | None, control: str | None) -> None:
    """Rekey now with PEER (default: every peer that is up)."""
    res = _call("tunnel.rekey", control, peer=peer)
    click.echo(f"rekeying with {', '.join(res['rekeying']) or 'nobody (no tunnel is up)'}")


@tunnel.command("rotate")
@_control_opt
def rotate(control: str | None) -> None:
    """Load the node's new certificate and key from their files and rehandshake."""
    res = _call("tunnel.rotate", control)
    click.echo(f"certificate serial {res.get('serial')}; rehandshaking with "
               f"{', '.join(res.get('rehandshake') or []) or 'nobody'}")


@tunnel.command("reload")
@_control_opt
def reload(control: str | None) -> None:
    """Re-read the CRL now and re-verify every peer."""
    res = _call("tunnel.reload", control)
    click.echo(f"torn down: {', '.join(res['torn_down']) or 'none'}")


@tunnel.command("deny")
@click.argument("node")
@_control_opt
def deny(node: str, control: str | None) -> None:
    """Deny NODE on this node: tear its tunnel down and refuse its handshakes."""
    res = _call("tunnel.deny", control, node=node)
    click.echo(f"denied {res['denied']}; torn down: {', '.join(res['torn_down']) or 'none'}")


@tunnel.group("testbed")
def testbed_grp() -> None:
    """Two hosts behind two mesh nodes, an ESP-only wire (netns pdtn-a, pdtn-b)."""


@testbed_grp.command("up")
@click.argument("directory", metavar="DIR")
@click.option("--ports", "hs_ports", default="7401,7402", show_default=True,
              metavar="P1,P2", help="Handshake UDP ports of n1 and n2 on 127.0.0.1.")
def testbed_up(directory: str, hs_ports: str) -> None:
    """Build the topology; write a CA, both nodes' certificates and configs to DIR."""
    from .tunnel import testbed as ttb
    try:
        p1, p2 = (int(x) for x in hs_ports.split(","))
    except ValueError:
        raise ConfigError(f"--ports {hs_ports!r}: expected two UDP ports like 7401,7402",
                          key="ports") from None
    ttb.up()
    cfgs = ttb.write_configs(directory, (p1, p2))
    click.echo("tunnel testbed up: netns pdtn-a (10.77.1.1) - n1 = wire pdtn-wa/pdtn-wb = "
               "n2 - netns pdtn-b (10.77.2.1)")
    for i, s in enumerate(ttb.SIDES):
        click.echo(f"  node {s.node}: pydp tunnel run {ttb.PIPELINE} --tunnel {cfgs[s.node]} "
                   + " ".join(ttb.devargs(s, i)) + f" --control {directory}/{s.node}.sock")
    click.echo(f"  try:  ip netns exec pdtn-a ping 10.77.2.1; pydp tunnel show --control "
               f"{directory}/n1.sock")
    click.echo(f"  revoke: pydp tunnel ca revoke {directory}/ca n2")
    click.echo("  down: pydp tunnel testbed down")


@testbed_grp.command("down")
def testbed_down() -> None:
    """Remove the tunnel testbed."""
    from .tunnel import testbed as ttb
    ttb.down()
    click.echo("tunnel testbed: down")
