"""pydp service add|set|drain|remove|show against a running pipelines/load-balancer.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pydp.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _run_lb(sock: str):
    """The shipped load balancer on net_null ports, with its control socket."""
    ports = [a for i, p in enumerate(["clients", "be1", "be2", "be3"])
             for a in ("--port", f"{p}=net_null_lb{i}")]
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", "pipelines/load-balancer.yaml",
                          *ports, "--control", sock, "--duration", "90"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not os.path.exists(sock) and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert os.path.exists(sock), p.communicate(timeout=10)
    yield sock
    p.send_signal(2)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err


@pytest.fixture
def lb(tmp_path):
    """A load balancer of its own (the test changes its services)."""
    yield from _run_lb(str(tmp_path / "lb.sock"))


@pytest.fixture(scope="module")
def lb_shared(tmp_path_factory):
    """One load balancer for the tests that must leave it unchanged."""
    yield from _run_lb(str(tmp_path_factory.mktemp("lb") / "lb.sock"))


def show(sock: str) -> dict:
    r = cli("service", "show", "--control", sock, "--json")
    assert r.returncode == 0, r.stderr
    return {s["name"]: s for s in json.loads(r.stdout)["services"]}


def test_service_commands_live(lb):
    sock = lb
    web = show(sock)["web"]
    assert [(b["addr"], b["weight"], b["state"]) for b in web["backends"]] == [
        ("10.77.1.11", 1, "up"), ("10.77.1.12", 2, "up"), ("10.77.1.13", 3, "up")]
    assert "10.77.1.12:8080" in cli("service", "show", "--control", sock).stdout
    # a dry run reports the Maglev buckets that would move and changes nothing
    r = cli("service", "add", "web", "10.77.1.14:8080", "--weight", "2", "--dry-run",
            "--control", sock, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    mv = res["moves"]["web"]
    assert not res["committed"] and mv["buckets"] == 65537
    assert abs(mv["buckets_moved"] - 65537 * 2 / 8) < 0.03 * 65537
    assert len(show(sock)["web"]["backends"]) == 3
    r = cli("service", "add", "web", "10.77.1.14:8080", "--weight", "2", "--control", sock)
    assert r.returncode == 0 and "committed" in r.stdout and "Maglev buckets move" in r.stdout
    assert cli("service", "set", "web", "10.77.1.11:8080", "--weight", "5",
               "--control", sock).returncode == 0
    assert cli("service", "drain", "web", "10.77.1.12:8080", "--control", sock).returncode == 0
    assert cli("service", "set", "web", "10.77.1.13:8080", "--state", "down",
               "--control", sock).returncode == 0
    b = {x["addr"]: x for x in show(sock)["web"]["backends"]}
    assert (b["10.77.1.11"]["weight"], b["10.77.1.12"]["state"], b["10.77.1.13"]["state"]) == (
        5, "drain", "down")
    assert cli("service", "remove", "web", "10.77.1.14:8080", "--control", sock).returncode == 0
    assert "10.77.1.14" not in {x["addr"] for x in show(sock)["web"]["backends"]}
    # a new service, then its removal
    r = cli("service", "add", "dns", "--vip", "10.77.0.53", "--port", "53", "--proto", "udp",
            "--algorithm", "wrr", "--control", sock)
    assert r.returncode == 0, r.stderr
    assert cli("service", "add", "dns", "10.77.1.11:5353", "--control", sock).returncode == 0
    assert show(sock)["dns"]["algorithm"] == "wrr"
    assert cli("service", "remove", "dns", "--control", sock).returncode == 0
    assert set(show(sock)) == {"web"}


@pytest.mark.parametrize("args, expect", [
    (("set", "web", "10.77.1.11:8080", "--weight", "70000"), "weight"),
    (("add", "web", "10.77.1.99"), "backend"),
    (("drain", "web", "10.77.1.99:1"), "no backend"),
    (("drain", "nope", "10.77.1.11:8080"), "no service"),
    (("add", "x", "--vip", "10.77.0.300", "--port", "1"), "vip"),
    (("add", "x", "--vip", "10.77.0.1", "--port", "1", "--table-size", "1000"), "table_size"),
])
def test_bad_input_is_one_line(lb_shared, args, expect):
    r = cli("service", *args, "--control", lb_shared)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("pydp: error:") and expect in r.stderr, r.stderr
    assert len(show(lb_shared)["web"]["backends"]) == 3


def test_no_dataplane_is_one_line(tmp_path):
    r = cli("service", "show", "--control", str(tmp_path / "none.sock"))
    assert r.returncode == 2 and r.stderr.startswith("pydp: error:")
