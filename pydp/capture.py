"""Capture to pcapng from a running dataplane (rte_pcapng), readable by tshark and Wireshark.

Workers copy what a port receives and sends, or what enters a stage, into a
ring of their own (``csrc/pd_capture.c``); a thread of this process drains
it into the file. A full ring loses the copy, never the packet, and is
counted in :attr:`CaptureInfo.dropped`::

    with Capture(dp, "out.pcapng", port="out", count=100) as cap:
        cap.wait(timeout=10)
    print(cap.info)          # written, dropped

Off, capture costs the worker loop one branch per burst, shared with trace.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ._core import check, ffi, lib
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .runtime import Dataplane


@dataclass
class CaptureInfo:
    """Where a capture stands."""

    written: int        # packets in the file
    dropped: int        # copies lost (capture ring full, pool empty)
    remaining: int      # of the count, still to capture (0 without a count)
    active: bool        # workers still copy
    leaked: int = 0     # after stop: copies not back in the capture pool (always 0)

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-able dict."""
        return asdict(self)


def _info(ci: Any) -> CaptureInfo:
    return CaptureInfo(int(ci.written), int(ci.dropped), int(ci.remaining), bool(ci.active),
                       int(ci.leaked))


class Capture:
    """One running capture of a :class:`pydp.Dataplane` (one at a time per dataplane)."""

    def __init__(self, dp: Dataplane, path: str | os.PathLike, port: str | None = None,
                 stage: str | None = None, count: int = 0, snaplen: int = 0,
                 filter: str | None = None, poll: float = 0.02) -> None:  # noqa: A002
        """Start capturing to ``path``: port ``port`` (rx and tx) or the input of ``stage``.

        ``count``: stop copying after that many packets (0: until :meth:`stop`).
        ``snaplen``: bytes kept per packet (0: whole frames). ``filter``: a
        pcap-filter expression (as tcpdump), applied in C.
        """
        if (port is None) == (stage is None):
            raise InvalidArgument("capture: give --port or --stage (one of them)")
        if count < 0 or snaplen < 0:
            raise InvalidArgument("capture: count and snaplen must be >= 0")
        if dp._cp is None:
            raise InvalidArgument("the dataplane is closed")
        pidx = sidx = -1
        if port is not None:
            if port not in dp.port_index:
                raise InvalidArgument(f"capture: no port '{port}' (ports: "
                                      f"{', '.join(dp.port_index)})")
            pidx = dp.port_index[port]
        if stage is not None:
            if stage not in dp.stage_index:
                raise InvalidArgument(f"capture: no stage '{stage}' (stages: "
                                      f"{', '.join(dp.stage_index)})")
            sidx = dp.stage_index[stage]
        self.dp = dp
        self.path = os.fspath(path)
        self.port, self.stage, self.count = port, stage, count
        self._ci = ffi.new("struct pd_capture_info *")
        check(lib.pd_capture_start(dp._cp, self.path.encode(), pidx, sidx, count, snaplen,
                                   filter.encode() if filter else ffi.NULL))
        self.info = CaptureInfo(0, 0, count, True)
        self._stopped = False
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._poll = poll
        self._thread = threading.Thread(target=self._drain, name="pydp-capture", daemon=True)
        self._thread.start()
        # closing the dataplane stops this capture first (no poll on a freed pipeline)
        dp.services.setdefault("on_close", []).append(self.stop)

    def _drain(self) -> None:
        while not self._halt.wait(self._poll):
            self.poll()

    def poll(self) -> CaptureInfo:
        """Write what the workers copied so far; return the current :class:`CaptureInfo`."""
        with self._lock:
            if not self._stopped:
                check(lib.pd_capture_poll(self.dp._cp, self._ci))
                self.info = _info(self._ci)
            return self.info

    @property
    def done(self) -> bool:
        """True once the count is reached (never without a count, until stopped)."""
        return self._stopped or (self.count > 0 and not self.poll().active)

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait until the count is reached (True) or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done:
                return True
            time.sleep(self._poll)
        return self.done

    def stop(self) -> CaptureInfo:
        """Stop copying, write the rest and the statistics block, close the file."""
        self._halt.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        with self._lock:
            if not self._stopped:
                self._stopped = True
                if self.dp._cp is not None:
                    check(lib.pd_capture_stop(self.dp._cp, self._ci))
                    self.info = _info(self._ci)
        return self.info

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
