"""The lb testbed: real HTTP over TCP through pipelines/load-balancer.yaml.

A client namespace (pdlbc) reaches the VIP 10.77.0.100:80; three backend
namespaces (pdlbs1..3) run HTTP/1.1 servers (pydp.lb.httpd) on port 8080 that
answer with their name. The dataplane runs in this process on af_packet ports
over the veths; the kernels on both sides complete real TCP handshakes through
it. Only pdlb* names are used; the fixture tears everything down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import PIPELINES, ROOT

from pydp import Dataplane, Pipeline
from pydp import flows as ft
from pydp import testbed as tb
from pydp.lb import Services

pytestmark = pytest.mark.nosan


class Client:
    """pydp.lb.httpc in the client namespace, one JSON answer per command."""

    def __init__(self) -> None:
        self.p = tb.spawn_in("pdlbc", [sys.executable, "-m", "pydp.lb.httpc", "--vip",
                                       "10.77.0.100", "--port", "80"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def cmd(self, line: str) -> dict:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def new(self, n: int) -> Counter:
        got = self.cmd(f"new {n}")
        assert "error" not in got, got
        return Counter(got)

    def close(self) -> None:
        try:
            self.cmd("quit")
        except (OSError, ValueError):
            pass
        self.p.kill()
        self.p.wait(timeout=10)


@pytest.fixture
def lbnet(eal, vdev_name):
    topo = tb.up("lb")
    servers = [tb.spawn_in(f"pdlbs{i}", [sys.executable, "-m", "pydp.lb.httpd", "--bind",
                                         f"10.77.1.{10 + i}", "--port", "8080", "--name",
                                         f"be{i}"], cwd=ROOT)
               for i in (1, 2, 3)]
    try:
        # wait until each server listens
        for i in (1, 2, 3):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = tb.exec_in(f"pdlbs{i}", ["ss", "-ltn", "sport", "= :8080"], timeout=10)
                if ":8080" in r.stdout:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"backend be{i} did not start")
        yield topo
    finally:
        for s in servers:
            s.kill()
            s.wait(timeout=10)
        tb.down("lb")


def test_http_through_the_load_balancer(lbnet, vdev_name):
    pl = Pipeline.load(PIPELINES / "load-balancer.yaml")
    # smooth WRR: the distribution follows the weights exactly (Maglev: see test_lb)
    pl.stage("lb").services[0]["algorithm"] = "wrr"
    with Dataplane(pl, ports=lbnet.devargs(vdev_name)) as dp:
        dp.start()
        svc = Services(dp)
        client = Client()
        try:
            got = client.new(60)
            assert got == {"be1": 10, "be2": 20, "be3": 30}, got
            # a kept-alive connection, then drain its backend: it carries on there,
            # new connections go elsewhere
            first = client.cmd("keep")["backend"]
            bk = f"10.77.1.{10 + int(first[2])}:8080"
            svc.drain("web", bk)
            assert client.cmd("keep") == {"backend": first}
            got = client.new(30)
            assert first not in got and sum(got.values()) == 30, got
            # remove it: the running connection still finishes its requests there
            res = svc.remove_backend("web", bk)
            assert res["moves"]["web"]["flows_lost_backend"] >= 1
            assert client.cmd("keep") == {"backend": first}
            got = client.new(20)
            assert first not in got and sum(got.values()) == 20, got
            assert {b["addr"] for b in svc.show()["services"][0]["backends"]} == \
                {f"10.77.1.{10 + i}" for i in (1, 2, 3)} - {bk.split(":")[0]}
            f = ft.flows(dp, "flows")
            web = f[f["dport"] == 80]
            assert len(web) >= 111           # every connection is a flow
            est = [r for r in ft.records(web) if r["nat"] and r["tcp_state"] == "established"]
            assert any(r["nat"]["dst"] == bk.split(":")[0] for r in est)  # the kept one
        finally:
            client.close()
        dp.stop()
        st = dp.stats()
        assert st.balanced(), st.summary()
        lb = st.stages()["lb"]
        assert lb["new_flows"] >= 111 and lb["reverse_nat"] > 0
        assert {k: v for k, v in st.drops().items() if k.startswith(("lb/", "flows/"))} == {}
