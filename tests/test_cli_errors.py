"""Bad input to every ``pydp`` command: one ``pydp: error:`` line naming the field, never a
traceback, a non-zero exit.

Each case is a subprocess, as an operator types it. Most never start the EAL; the
cases that talk to a dataplane share one background ``pydp run`` of
pipelines/load-balancer.yaml fed by the template source (module fixture).
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import PIPELINES, ROOT
from test_cli import env

from pydp.control import call

PYDP = [sys.executable, "-m", "pydp.cli"]
LIVE = "{live}"  # replaced by the running dataplane's control socket
STALE = "{stale}"  # a socket file nobody listens on
TMP = "{tmp}"  # the test's tmp_path


def run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(PYDP + args, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env(), stdin=subprocess.DEVNULL)


class Batch:
    """Runs a list of commands concurrently on first use (the suite stays fast); then
    each parametrised case reads its own result."""

    def __init__(self) -> None:
        self.results: dict[int, subprocess.CompletedProcess] = {}

    def run_all(self, cmds: list[list[str]]) -> None:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=6) as ex:
            for i, r in enumerate(ex.map(run_cli, cmds)):
                self.results[i] = r


def assert_one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, exactly one error line and it names the field."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pydp: error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


# (args, words the error line must contain). No EAL is started for these.
OFFLINE = [
    # pydp run: files, ports, numbers (all refused before the EAL starts)
    (["run", "/nonexistent.yaml", "--port", "in=net_null0"], ["/nonexistent.yaml"]),
    (["run", "pipelines/forward.yaml", "--port", "in=net_null0"], ["out"]),
    (["run", "pipelines/forward.yaml", "--port", "in=net_null0", "--port", "out=net_null1",
      "--port", "zz=net_null2"], ["--port zz"]),
    (["run", "pipelines/forward.yaml", "--port", "in", "--port", "out=net_null1"], ["--port"]),
    (["run", "pipelines/forward.yaml", "--port", "in=net_null0", "--port", "in=net_null1"],
     ["--port in", "twice"]),
    (["run", "pipelines/forward.yaml", "--port", "in=net_pcap0,rx_pcap=/nonexistent.pcap",
      "--port", "out=net_null1"], ["--port in", "rx_pcap=/nonexistent.pcap"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--duration", "-1"], ["--duration"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--interval", "0"], ["--interval"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--until-idle", "--idle", "-1"], ["--idle"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--rate", "-5"], ["--rate"]),
    (["run", "pipelines/forward.yaml", "--port", "in=net_null0", "--port", "out=net_null1",
      "--count", "100"], ["--count", "--generate"]),
    (["run", "pipelines/forward.yaml", "--generate", "zz", "--port", "out=net_null1"],
     ["--generate zz"]),
    (["run", "pipelines/forward.yaml", "--generate", "out", "--port", "in=net_null0",
      "--count", "10"], ["--generate out", "transmit-only"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--lcores", "0"], ["--lcores"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--metrics", "70000"], ["--metrics"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--metrics", "9100", "--metrics-addr", "999.1.1.1"], ["--metrics-addr", "999.1.1.1"]),
    (["run", "pipelines/forward.yaml", "--generate", "in", "--port", "out=net_null1",
      "--flow-log", "/tmp/x.jsonl"], ["--flow-log"]),
    (["run", "pipelines/forward.yaml", "--bogus-flag"], ["--bogus-flag"]),
    (["nosuchcommand"], ["nosuchcommand"]),
    # check / graph
    (["check", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["check"], ["PIPELINE.yaml"]),
    (["graph", "pipelines/forward.yaml", "-o", f"{TMP}/g.xyz"], ["g.xyz"]),
    (["graph", "pipelines/forward.yaml", "-o", "/nonexistent/dir/g.png"], ["/nonexistent/dir"]),
    # policy files
    (["policy", "graph", "pipelines/policies/firewall.yaml", "-o", f"{TMP}/p.xyz"], ["p.xyz"]),
    (["policy", "apply", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["policy", "import-k8s", "/nonexistent.yaml", "--inventory", "/nonexistent.yaml"],
     ["/nonexistent.yaml"]),
    # numbers out of range, refused before any socket is opened
    (["trace", "--count", "5000"], ["--count"]),
    (["trace", "--timeout", "0"], ["--timeout"]),
    (["capture", "-w", "x.pcapng", "--count", "1"], ["--port"]),
    (["capture", "--port", "out", "-w", "x.pcap", "--count", "1"], ["pcapng"]),
    (["capture", "--port", "out", "-w", "x.pcapng", "--snaplen", "70000"], ["--snaplen"]),
    (["capture", "--port", "out", "-w", "x.pcapng"], ["--count"]),
    (["top", "--interval", "0"], ["--interval"]),
    (["top", "--flows", "-1"], ["--flows"]),
    (["stats", "--stages", "--interval", "0"], ["--interval"]),
    (["stats", "--watch", "--interval", "-1"], ["--interval"]),
    (["flows", "--port", "99999"], ["--port"]),
    (["flows", "--addr", "notanaddr"], ["--addr"]),
    (["service", "set", "web", "10.77.1.11:8080", "--state", "bogus"], ["--state"]),
    (["service", "drain", "web"], ["ADDR:PORT"]),
    (["tunnel", "ca", "init", f"{TMP}/ca", "--days", "-5"], ["--days"]),
    (["tunnel", "ca", "issue", "/nonexistent", "n1"], ["/nonexistent"]),
    (["tunnel", "check", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["tunnel", "run", "--tunnel", "/nonexistent.yaml"], ["/nonexistent.yaml"]),
    (["tunnel", "run", "testbeds/tunnel-node.yaml", "--tunnel", "t.yaml", "--interval", "0"],
     ["--interval"]),
    (["testbed", "up", "nosuch"], ["nosuch"]),
    (["bench", "pipelines/forward.yaml", "--size", "10"], ["--size"]),
    (["bench", "pipelines/forward.yaml", "--duration", "-1"], ["--duration"]),
    (["bench", "pipelines/forward.yaml", "--repeat", "0"], ["--repeat"]),
    # no dataplane: a missing socket, a stale socket
    (["stats"], ["no running dataplane"]),
    (["trace", "--count", "5", "--filter", "udp port 53"], ["no running dataplane"]),
    (["capture", "--port", "out", "-w", "out.pcapng", "--count", "100"],
     ["no running dataplane"]),
    (["service", "show"], ["no running dataplane"]),
    (["tunnel", "show"], ["no running dataplane"]),
    (["stats", "--control", STALE], ["no running dataplane", "stale.sock"]),
    (["graph", "pipelines/forward.yaml", "-o", f"{TMP}/g.svg", "--control", STALE],
     ["stale.sock"]),
]


def _fill(args: list[str], tmp: Path, live: str = "") -> list[str]:
    return [a.replace(TMP, str(tmp)).replace(STALE, str(tmp / "stale.sock"))
            .replace(LIVE, live) for a in args]


def _stale(tmp: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp / "stale.sock"))
    s.close()  # the file stays, nobody listens


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    _stale(tmp)
    b = Batch()
    b.run_all([_fill(a, tmp) for a, _ in OFFLINE])
    return b


@pytest.mark.parametrize("i", range(len(OFFLINE)), ids=[" ".join(a)[:70] for a, _ in OFFLINE])
def test_offline_bad_input(offline, i):
    assert_one_error(offline.results[i], *OFFLINE[i][1])


def test_bad_devargs_after_eal_start_names_the_port():
    """The one case here that starts the EAL: the driver refuses the device."""
    r = run_cli(["run", "pipelines/forward.yaml", "--port", "in=bogus_dev0",
                 "--port", "out=net_null1", "--duration", "1", "--no-control"])
    assert_one_error(r, "bogus_dev0")
    assert "port 'in'" in r.stderr  # named as the operator named it


# -- every shipped file, one key broken: `pydp check` names the key ---------------------------

SHIPPED = sorted(PIPELINES.glob("*.yaml")) + sorted((ROOT / "testbeds").glob("*.yaml"))


def _stage(doc: dict, type_: str) -> dict:
    return next(s for s in doc["stages"] if s["type"] == type_)


def _set(path: list, value):
    def mutate(doc: dict) -> None:
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return mutate


MUTATIONS = {  # file stem -> [(what, mutate(doc), words in the error)]
    "forward": [
        ("port", lambda d: _stage(d, "forward").update(port="nosuch"), ["nosuch"]),
        ("dst_mac", lambda d: _stage(d, "forward").update(dst_mac="zz:zz"), ["dst_mac"]),
        ("verify_checksum", lambda d: _stage(d, "parse").update(verify_checksum="maybe"),
         ["verify_checksum"]),
        ("next", lambda d: d["stages"][0].update(next="nosuchstage"), ["nosuchstage"]),
    ],
    "router": [
        ("prefix", lambda d: _stage(d, "l3route")["routes"][0].update(prefix="10.0.0.0/33"),
         ["prefix"]),
        ("via", lambda d: _stage(d, "l3route")["routes"][0].update(via="nosuch"), ["nosuch"]),
    ],
    "l2bridge": [
        ("inputs", lambda d: d.update(inputs={"a": "nosuch"}), ["nosuch"]),
        ("inputs-string", lambda d: d.update(inputs="a"), ["inputs"]),
        ("inputs-list", lambda d: d.update(inputs=["a", "b"]), ["inputs must map"]),
    ],
    "firewall": [
        ("capacity", lambda d: _stage(d, "conntrack").update(capacity=-1), ["capacity"]),
        ("mode", lambda d: _stage(d, "conntrack").update(mode="bogus"), ["mode"]),
        ("policy", lambda d: _stage(d, "policy").update(policy="nosuch.yaml"), ["nosuch.yaml"]),
    ],
    "load-balancer": [
        ("weight", lambda d: _stage(d, "lb")["services"][0]["backends"][0].update(weight=-3),
         ["weight"]),
        ("algorithm", lambda d: _stage(d, "lb")["services"][0].update(algorithm="bogus"),
         ["algorithm"]),
        ("vip", lambda d: _stage(d, "lb")["services"][0].update(vip="10.77.0.300"), ["vip"]),
        ("full", lambda d: _stage(d, "conntrack").update(full="bogus"), ["full"]),
    ],
    "tunnel-gateway": [
        ("key", lambda d: _stage(d, "esp_encrypt")["sas"][0].update(key="0x0001"), ["key"]),
        ("spi", lambda d: _stage(d, "esp_decrypt")["sas"][0].update(spi=5), ["spi"]),
        ("cipher", lambda d: _stage(d, "esp_encrypt")["sas"][0].update(cipher="rot13"),
         ["cipher"]),
        ("replay_window", lambda d: _stage(d, "esp_decrypt")["sas"][0].update(
            replay_window=99999), ["replay_window"]),
    ],
    "tunnel-node": [
        ("crypto", lambda d: _stage(d, "esp_encrypt").update(crypto="bogus"), ["crypto"]),
    ],
}
GENERIC = [
    ("unknown stage key", lambda d: d["stages"][-1].update(bogus_key=1), ["bogus_key"]),
]
BROKEN = [(p, what, m, n) for p in SHIPPED
          for what, m, n in GENERIC + MUTATIONS.get(p.stem, [])]


def test_every_shipped_file_has_specific_mutations():
    assert {p.stem for p in SHIPPED} <= set(MUTATIONS), "add mutations for the new file"


@pytest.fixture(scope="module")
def broken():
    files = []
    for i, (path, _, mutate, _) in enumerate(BROKEN):
        doc = yaml.safe_load(path.read_text())
        orig = copy.deepcopy(doc)
        mutate(doc)
        assert doc != orig
        # beside the original, so that relative references (policy files) resolve
        out = path.parent / f".qa-broken-{os.getpid()}-{i}-{path.name}"
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(out)
    b = Batch()
    try:
        b.run_all([["check", str(f)] for f in files])
    finally:
        for f in files:
            f.unlink()
    return b


@pytest.mark.parametrize("i", range(len(BROKEN)),
                         ids=[f"{p.stem}-{w}" for p, w, _, _ in BROKEN])
def test_shipped_file_with_one_bad_key(broken, i):
    path, _, _, needles = BROKEN[i]
    line = assert_one_error(broken.results[i], *needles)
    orig = yaml.safe_load(path.read_text())
    for sa in (s for st in orig["stages"] for s in st.get("sas", []) or []):
        assert sa["key"].removeprefix("0x")[:16] not in line, "an SA key leaked"


def test_shipped_policy_with_bad_fields(tmp_path):
    src = yaml.safe_load((PIPELINES / "policies" / "firewall.yaml").read_text())
    for mutate, needle in (
            (lambda d: d["rules"][0].update(action="maybe"), "action"),
            (lambda d: d.update(default="maybe"), "default"),
            (lambda d: d["rules"][0].update(bogus=1), "bogus")):
        doc = copy.deepcopy(src)
        mutate(doc)
        f = tmp_path / "pol.yaml"
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        for cmd in (["check", str(f)], ["policy", "graph", str(f), "-o", str(tmp_path / "p.dot")]):
            assert_one_error(run_cli(cmd), needle)


TUNNEL = """\
node: n1
cert: pki/n1.crt
key: pki/n1.key
ca: pki/ca/ca.crt
listen: 127.0.0.1:7401
address: 192.168.77.1
subnets: [10.77.1.0/24]
peers:
  - {node: n2, endpoint: 127.0.0.1:7402, address: 192.168.77.2, subnets: [10.77.2.0/24]}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    for args in (["tunnel", "ca", "init", str(d / "pki" / "ca")],
                 ["tunnel", "ca", "issue", str(d / "pki" / "ca"), "n1", "--out", str(d / "pki")]):
        r = run_cli(args)
        assert r.returncode == 0, r.stderr
    (d / "t.yaml").write_text(TUNNEL)
    r = run_cli(["tunnel", "check", str(d / "t.yaml")])
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.parametrize("old,new,needle", [
    ("7401\n", "99999\n", "listen"),
    ("10.77.1.0/24", "10.77.1.0/33", "subnets"),
    ("endpoint: 127.0.0.1:7402", "endpoint: nope", "endpoint"),
    ("node: n1", "node: n1\nciphers: [rot13]", "ciphers"),
])
def test_bad_tunnel_config(pki, old, new, needle):
    f = pki / f"bad-{needle}.yaml"
    f.write_text(TUNNEL.replace(old, new, 1))
    assert_one_error(run_cli(["tunnel", "check", str(f)]), needle)


# -- against a running dataplane -----------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    sock = str(d / "lb.sock")
    p = subprocess.Popen(PYDP + ["run", "pipelines/load-balancer.yaml", "--generate", "clients",
                                 "--rate", "1000", "--port", "be1=net_null1,no-rx=1",
                                 "--port", "be2=net_null2,no-rx=1",
                                 "--port", "be3=net_null3,no-rx=1",
                                 "--control", sock, "--duration", "120"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not os.path.exists(sock) and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert os.path.exists(sock), p.stderr.read() if p.poll() is not None else "no socket"
        while call("stats", sock)["ports"]["clients"]["rx_packets"] < 10:
            assert time.time() < deadline
            time.sleep(0.05)
        yield sock
    finally:
        if p.poll() is None:
            p.send_signal(2)
        p.wait(timeout=60)


LIVE_CASES = [
    (["trace", "--count", "2", "--filter", "udp port"], ["filter", "udp port"]),
    (["trace", "--count", "2", "--filter", "port 99999"], ["filter", "99999"]),
    (["capture", "--port", "nosuch", "-w", f"{TMP}/c.pcapng", "--count", "1"], ["nosuch"]),
    (["capture", "--stage", "nosuch", "-w", f"{TMP}/c.pcapng", "--count", "1"], ["nosuch"]),
    (["capture", "--port", "clients", "-w", f"{TMP}/c.pcapng", "--count", "1",
      "--filter", "tcp and and"], ["filter"]),
    (["capture", "--port", "clients", "-w", "/nonexistent/dir/c.pcapng", "--count", "1"],
     ["/nonexistent/dir/c.pcapng"]),
    (["flows", "--state", "bogus"], ["state", "bogus"]),
    (["policy", "show"], ["policy.show"]),
    (["tunnel", "show"], ["tunnel manager"]),
    (["service", "show", "nosuch"], ["nosuch"]),
    (["service", "add", "web", "notanaddr", "--dry-run"], ["backend", "notanaddr"]),
    (["service", "add", "web", "10.77.1.14:99999", "--dry-run"], ["backend", "99999"]),
    (["service", "add", "web", "10.77.1.14:8080", "--weight", "-1", "--dry-run"], ["weight"]),
    (["service", "add", "nosuch", "10.77.1.14:8080", "--dry-run"], ["nosuch"]),
    (["service", "add", "web2", "--vip", "notip", "--port", "80", "--dry-run"], ["vip"]),
    (["service", "add", "web2", "--vip", "10.1.1.1", "--port", "80", "--table-size", "100",
      "--dry-run"], ["table_size"]),
    (["service", "set", "web", "10.77.1.99:8080", "--weight", "5"], ["10.77.1.99:8080"]),
]


@pytest.fixture(scope="module")
def live_results(live, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live-out")
    b = Batch()
    b.run_all([_fill(a, tmp) + ["--control", live] for a, _ in LIVE_CASES])
    return b


@pytest.mark.parametrize("i", range(len(LIVE_CASES)),
                         ids=[" ".join(a)[:70] for a, _ in LIVE_CASES])
def test_live_bad_input(live, live_results, i):
    line = assert_one_error(live_results.results[i], *LIVE_CASES[i][1])
    assert "backend: backend:" not in line
    assert call("ping", live) == "pong"  # the dataplane is still up
