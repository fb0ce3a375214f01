"""The control socket: commands, typed errors, owner-only access."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import ROOT

import pydp
from pydp.control import ControlClient, ControlServer, call

RAW_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-failed", e.errno); sys.exit(0)
s.sendall(b'{"cmd": "ping"}\n')
print(s.makefile().readline().strip())
"""


@pytest.fixture
def server():
    # not under tmp_path: its 0700 parents would hide the socket from other users anyway
    base = tempfile.mkdtemp(prefix="pydp-ctl-", dir="/tmp")
    os.chmod(base, 0o755)
    srv = ControlServer(os.path.join(base, "ctl", "pydp.sock"))
    srv.register("add", lambda a, b: a + b)
    srv.register("fail", lambda: (_ for _ in ()).throw(pydp.InvalidArgument("rule 3: port")))
    srv.start()
    yield srv
    srv.close()
    shutil.rmtree(base, ignore_errors=True)


def test_commands_and_typed_errors(server):
    with ControlClient(server.path) as c:
        assert c.call("ping") == "pong"
        assert c.call("add", a=2, b=3) == 5
        assert "add" in c.call("commands")
        with pytest.raises(pydp.NotFound, match="unknown command 'nope'"):
            c.call("nope")
        with pytest.raises(pydp.InvalidArgument, match="rule 3: port"):
            c.call("fail")
        with pytest.raises(pydp.InvalidArgument):
            c.call("add", a=1)  # missing argument: an error, the server lives on
        assert c.call("ping") == "pong"


def test_bad_json_line_gets_an_error_answer(server):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.connect(server.path)
    f = s.makefile("rwb")
    f.write(b"this is not json\n")
    f.flush()
    ans = json.loads(f.readline())
    assert ans["ok"] is False and "bad JSON" in ans["error"]
    s.close()


def test_socket_and_directory_are_owner_only(server):
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700


def _as_nobody(path: str) -> str:
    py = shutil.which("python3", path="/usr/bin:/bin")
    if py is None:
        pytest.skip("no system python3 for the unprivileged client")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        py, "-c", RAW_CLIENT, path], capture_output=True, text=True, timeout=20)
    return r.stdout.strip()


def test_other_users_cannot_connect(server):
    os.chmod(os.path.dirname(server.path), 0o755)  # let them reach the socket file
    assert _as_nobody(server.path).startswith("connect-failed 13")  # EACCES by mode 0600


def test_other_users_refused_by_peer_credentials(server):
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o666)  # even if the file mode were loosened...
    ans = json.loads(_as_nobody(server.path))
    assert ans["ok"] is False and ans["type"] == "PermissionDenied"  # ...SO_PEERCRED refuses


def test_second_server_on_a_live_socket_is_refused(server):
    with pytest.raises(pydp.AlreadyExists, match="in use"):
        ControlServer(server.path)


def test_no_dataplane_is_a_clear_error(tmp_path):
    with pytest.raises(pydp.NotFound, match="no running dataplane"):
        call("ping", str(tmp_path / "none.sock"))


def test_pydp_run_serves_stats_and_cli_reads_them(tmp_path):
    sock = str(tmp_path / "run.sock")
    p = subprocess.Popen([sys.executable, "-m", "pydp.cli", "run", "pipelines/forward.yaml",
                          "--port", "in=net_null0", "--port", "out=net_null1,no-rx=1",
                          "--duration", "8", "--control", sock],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.1)
        info = call("info", sock)
        while not info["running"] and time.time() < deadline:  # the socket opens first
            time.sleep(0.05)
            info = call("info", sock)
        assert info["pipeline"] == "forward" and info["running"]
        while call("stats", sock)["ports"]["in"]["rx_packets"] == 0 and time.time() < deadline:
            time.sleep(0.05)
        r = subprocess.run([sys.executable, "-m", "pydp.cli", "stats", "--control", sock,
                            "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["ports"]["in"]["rx_packets"] > 0
        assert "parse" in doc["stages"]
        r = subprocess.run([sys.executable, "-m", "pydp.cli", "stats", "--control", sock],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert "stages:" in r.stdout and "parse" in r.stdout
        p.send_signal(2)
        p.communicate(timeout=30)
        assert p.returncode == 0
        assert not os.path.exists(sock)  # removed on exit
    finally:
        p.kill()


def test_stats_without_dataplane_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pydp.cli", "stats", "--control",
                        str(tmp_path / "x.sock")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("pydp: error: no running dataplane")
    assert "Traceback" not in r.stderr
