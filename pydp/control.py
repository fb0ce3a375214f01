"""The local control socket of a running dataplane.

A running ``pydp run`` listens on a Unix stream socket (default
``/run/pydp/pydp.sock``). The socket and its directory are owner-only
(0600 / 0700) and every connection's peer credentials (SO_PEERCRED) are
checked: only the owner's uid (or root) is served, anyone else gets one
refusal line and is disconnected.

Protocol: one JSON object per line each way. A request is
``{"cmd": NAME, "args": {...}}``; the answer is ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": MESSAGE, "type": EXCEPTION_NAME}``. Commands are
registered by name (:meth:`ControlServer.register`), so later features
(policy, services, tunnels, trace) add theirs without touching this file.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from . import errors
from .errors import NotFound, PermissionDenied, PydpError

DEFAULT_SOCKET = "/run/pydp/pydp.sock"
MAX_REQUEST = 16 * 1024 * 1024

Handler = Callable[..., Any]


def default_path() -> str:
    """The socket path: $PYDP_CONTROL or /run/pydp/pydp.sock."""
    return os.environ.get("PYDP_CONTROL", DEFAULT_SOCKET)


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class ControlServer:
    """Serves registered commands on a Unix socket from a background thread."""

    def __init__(self, path: str | None = None) -> None:
        """Bind ``path`` (owner-only); call :meth:`start` to serve."""
        self.path = path or default_path()
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = os.geteuid()
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _alive(self.path):
                raise errors.AlreadyExists(f"control socket {self.path} is in use by a running "
                                           "dataplane (give another with --control)")
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.register("ping", lambda: "pong")
        self.register("commands", lambda: sorted(self._handlers))

    def register(self, name: str, fn: Handler) -> None:
        """Serve command ``name`` with ``fn(**args)``; its return value must be JSON-able."""
        self._handlers[name] = fn

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._serve, name="pydp-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            uid = peer_uid(conn)
            f = conn.makefile("rwb")
            if uid not in (self.owner, 0):
                # read its request first: closing with unread data would reset the
                # connection and the caller would never see why it was refused
                conn.settimeout(2.0)
                try:
                    f.readline(MAX_REQUEST)
                except OSError:
                    pass
                _send(f, {"ok": False, "type": "PermissionDenied",
                          "error": f"uid {uid} may not use this control socket"})
                return
            while not self._stop.is_set():
                line = f.readline(MAX_REQUEST)
                if not line:
                    return
                _send(f, self.handle(line))

    def handle(self, line: bytes) -> dict[str, Any]:
        """Run one request line and return the answer object."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise errors.InvalidArgument("a request is {\"cmd\": NAME, \"args\": {...}}")
            fn = self._handlers.get(req["cmd"])
            if fn is None:
                raise NotFound(f"unknown command '{req['cmd']}' (known: "
                               f"{', '.join(sorted(self._handlers))})")
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise errors.InvalidArgument("args must be an object")
            with self._lock:
                return {"ok": True, "result": fn(**args)}
        except json.JSONDecodeError as e:
            return {"ok": False, "type": "InvalidArgument", "error": f"bad JSON: {e}"}
        except PydpError as e:
            return {"ok": False, "type": type(e).__name__, "error": str(e)}
        except TypeError as e:
            return {"ok": False, "type": "InvalidArgument", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a control request must never kill the server
            return {"ok": False, "type": type(e).__name__, "error": f"internal error: {e}"}


def _send(f: Any, obj: dict[str, Any]) -> None:
    f.write(json.dumps(obj).encode() + b"\n")
    f.flush()


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class ControlClient:
    """A connection to a running dataplane's control socket."""

    def __init__(self, path: str | None = None, timeout: float = 10.0) -> None:
        """Connect; raises NotFound when no dataplane listens there."""
        self.path = path or default_path()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except FileNotFoundError:
            self._sock.close()
            raise NotFound(f"no running dataplane: {self.path} does not exist "
                           "(is `pydp run` running? see --control)") from None
        except PermissionError:
            self._sock.close()
            raise PermissionDenied(f"{self.path}: permission denied (owner-only)") from None
        except ConnectionRefusedError:
            self._sock.close()
            raise NotFound(f"no running dataplane listens on {self.path}") from None
        self._f = self._sock.makefile("rwb")

    def call(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result, raising the typed error on failure."""
        _send(self._f, {"cmd": cmd, "args": args})
        line = self._f.readline()
        if not line:
            raise PydpError(f"{self.path}: the dataplane closed the connection")
        ans = json.loads(line)
        if ans.get("ok"):
            return ans.get("result")
        cls = getattr(errors, ans.get("type", ""), None)
        if not (isinstance(cls, type) and issubclass(cls, PydpError)):
            cls = PydpError
        raise cls(ans.get("error", "error"))

    def close(self) -> None:
        """Disconnect."""
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(cmd: str, path: str | None = None, **args: Any) -> Any:
    """One-shot: connect, run ``cmd``, disconnect."""
    with ControlClient(path) as c:
        return c.call(cmd, **args)
