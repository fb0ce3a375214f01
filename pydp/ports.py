"""Ports opened from DPDK devargs, with hotplug, inject and capture.

A :class:`Port` is any device DPDK can drive: a PCI address (a NIC bound to
vfio-pci or uio), or a virtual device such as ``net_null0``,
``net_ring0`` (``net_ring0,queues=2``), ``net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap``,
``net_af_packet0,iface=veth0``, ``net_tap0`` or ``net_memif0``. Virtual
devices are hot-plugged when opened and removed when closed.

net_ring ports are backed by rings pydp owns, so :meth:`Port.inject` puts
packets on a port "as if received" and :meth:`Port.capture` takes what the
port transmitted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import eal
from ._core import check, cstr, ffi, lib
from .errors import InvalidArgument, NotSupported, PydpError

if TYPE_CHECKING:
    from .mempool import Pool

_DEVARGS_RE = re.compile(
    r"^(?:(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
    r"|net_[A-Za-z0-9_]+|[a-z_]+[0-9]*)(?:,[A-Za-z0-9_.\-]+=[^,]*)*$")
_PCI_RE = re.compile(r"^(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")

PacketLike = Any  # scapy Packet, bytes, bytearray or memoryview


def is_pci(devargs: str) -> bool:
    """True when ``devargs`` names a PCI device (a NIC)."""
    return bool(_PCI_RE.match(devargs))


def validate_devargs(devargs: str) -> str:
    """Check the shape of a devargs string; raise InvalidArgument naming it."""
    if not isinstance(devargs, str) or not devargs.strip():
        raise InvalidArgument("devargs: empty")
    if not _DEVARGS_RE.match(devargs):
        raise InvalidArgument(
            f"devargs '{devargs}': expected a PCI address (0000:03:00.0) or a "
            "vdev such as net_null0 or net_pcap0,rx_pcap=FILE")
    return devargs


@dataclass(frozen=True)
class PortInfo:
    """Static facts about an open port."""

    port_id: int
    name: str
    driver: str
    mac: str
    max_rxq: int
    max_txq: int
    rss: bool
    is_ring: bool


def to_bytes(pkt: PacketLike) -> bytes:
    """Raw bytes of a scapy packet, bytes-like object or numpy uint8 row."""
    if isinstance(pkt, (bytes, bytearray, memoryview)):
        return bytes(pkt)
    if isinstance(pkt, np.ndarray):
        return pkt.astype(np.uint8, copy=False).tobytes()
    return bytes(pkt)  # scapy Packet and anything with __bytes__


class Port:
    """One DPDK ethdev port, opened from devargs (hot-plugged if virtual)."""

    def __init__(self, devargs: str, name: str | None = None) -> None:
        """Probe ``devargs`` and open the port; ``name`` is the pipeline's name for it."""
        eal.init()
        self.devargs = validate_devargs(devargs)
        self.name = name or devargs.split(",")[0]
        pid = ffi.new("uint16_t *")
        try:
            check(lib.pd_port_probe(devargs.encode(), pid))
        except PydpError as e:
            if name is None:
                raise
            # the operator knows the port by its pipeline name (--port NAME=...)
            raise type(e)(f"port '{name}': {e}", e.errno) from None
        self.port_id = int(pid[0])
        self._configured = False
        self._started = False
        self._pool: Pool | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------
    def configure(self, pool: Pool, rxq: int = 1, txq: int = 1, rx_desc: int = 1024,
                  tx_desc: int = 1024, promisc: bool = True) -> None:
        """Set up ``rxq``/``txq`` queues (RSS when rxq > 1 and supported) on ``pool``."""
        conf = ffi.new("struct pd_port_conf *", {
            "n_rxq": rxq, "n_txq": txq, "rx_desc": rx_desc, "tx_desc": tx_desc,
            "promisc": int(promisc)})
        check(lib.pd_port_configure(self.port_id, conf, pool._ptr))
        self._pool = pool
        self._configured = True

    def start(self) -> None:
        """Start the device (rx and tx)."""
        check(lib.pd_port_start(self.port_id))
        self._started = True

    def stop(self) -> None:
        """Stop the device; NIC rx rings give their mbufs back."""
        if self._started:
            check(lib.pd_port_stop(self.port_id))
            self._started = False

    def close(self) -> None:
        """Stop and remove (hot-unplug) the device. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._started = False
        check(lib.pd_port_remove(self.port_id))

    def __enter__(self) -> Port:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Port({self.name!r}, devargs={self.devargs!r}, id={self.port_id})"

    # -- facts ------------------------------------------------------------------
    def info(self) -> PortInfo:
        """Driver, MAC, queue limits and RSS capability."""
        i = ffi.new("struct pd_port_info *")
        check(lib.pd_port_info(self.port_id, i))
        mac = ":".join(f"{b:02x}" for b in bytes(ffi.buffer(i.mac, 6)))
        return PortInfo(self.port_id, cstr(i.name), cstr(i.driver), mac, i.max_rxq,
                        i.max_txq, bool(i.rss_offloads), bool(i.is_ring))

    def hwstats(self) -> dict[str, int]:
        """The device's own counters (rte_eth_stats): ipackets, imissed, ..."""
        s = ffi.new("struct pd_port_hwstats *")
        check(lib.pd_port_hwstats(self.port_id, s))
        return {k: int(getattr(s, k)) for k in (
            "ipackets", "opackets", "ibytes", "obytes", "imissed", "ierrors",
            "oerrors", "rx_nombuf")}

    # -- traffic (net_ring ports) -------------------------------------------------
    def inject(self, pkts: Iterable[PacketLike] | np.ndarray, queue: int = 0,
               lengths: Sequence[int] | None = None, timeout: float = 5.0) -> int:
        """Put packets on this port's rx side, as if they had been received.

        ``pkts`` is an iterable of scapy packets or bytes, or a 2-D numpy
        uint8 array (one packet per row; ``lengths`` gives each row's length,
        default the full row). Waits up to ``timeout`` s for ring space;
        returns how many were injected.
        """
        if self._pool is None:
            raise InvalidArgument(f"port '{self.name}': configure it (or run a pipeline) "
                                  "before injecting")
        if isinstance(pkts, np.ndarray):
            if pkts.ndim != 2:
                raise InvalidArgument("inject: a numpy batch must be 2-D (packets x bytes)")
            lens = list(lengths) if lengths is not None else [pkts.shape[1]] * pkts.shape[0]
            datas = [pkts[i, :lens[i]].tobytes() for i in range(pkts.shape[0])]
        else:
            datas = [to_bytes(p) for p in pkts]
        total = 0
        deadline = time.monotonic() + timeout
        while total < len(datas):
            chunk = datas[total:total + 4096]
            blob = b"".join(chunk)
            lens_c = ffi.new("uint32_t[]", [len(d) for d in chunk])
            n = check(lib.pd_port_inject(self.port_id, queue, self._pool._ptr,
                                         ffi.from_buffer(blob), lens_c, len(chunk)))
            total += n
            if n < len(chunk):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
        return total

    def capture(self, count: int | None = None, timeout: float = 2.0, queue: int | None = None,
                raw: bool = False, idle: float = 0.2) -> list:
        """Take what this port transmitted, as scapy ``Ether`` packets (or bytes).

        Waits until ``count`` packets arrived or ``timeout`` s passed. With
        ``count=None`` it returns once nothing new came for ``idle`` s.
        """
        from scapy.layers.l2 import Ether

        queues = [queue] if queue is not None else list(range(self._nq()))
        out: list[bytes] = []
        slot = 16384
        batch = 256
        buf = ffi.new("uint8_t[]", slot * batch)
        lens = ffi.new("uint32_t[]", batch)
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while True:
            got = 0
            for q in queues:
                want = batch if count is None else min(batch, count - len(out))
                if want <= 0:
                    break
                n = check(lib.pd_port_capture(self.port_id, q, buf, slot, lens, want))
                mv = ffi.buffer(buf, slot * batch)
                for i in range(n):
                    ln = min(int(lens[i]), slot)
                    out.append(bytes(mv[i * slot:i * slot + ln]))
                got += n
            now = time.monotonic()
            if got:
                last = now
            if count is not None and len(out) >= count:
                break
            if now > deadline or (count is None and now - last > idle):
                break
            if not got:
                time.sleep(0.002)
        return out if raw else [Ether(b) for b in out]

    def pending(self, tx: bool = True) -> int:
        """Packets waiting in this ring port's tx (or rx) rings."""
        return check(lib.pd_port_pending(self.port_id, int(tx)))

    def _nq(self) -> int:
        i = ffi.new("struct pd_port_info *")
        check(lib.pd_port_info(self.port_id, i))
        if not i.is_ring:
            raise NotSupported(f"port '{self.name}' ({cstr(i.driver)}) is not a net_ring "
                               "port: capture needs one (or a net_pcap tx_pcap file)")
        return max(1, int(i.n_txq))
