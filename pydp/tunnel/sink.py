"""Where the tunnel manager puts its SAs: the dataplane's ESP stages, or memory.

The manager talks to any object with the ESP contract of
:class:`pydp.Dataplane`::

    sa_add(stage, sa)        install (outbound: the newest SA for a selector wins)
    sa_remove(stage, spi)    remove, wiping the key in C
    sa_list(stage)           [{spi, direction, packets, bytes, ...}] - never keys
    sa_events(stage)         [{spi, event}] since the last call: soft/hard expiry,
                             sequence nearing exhaustion

:class:`MemorySink` implements it in memory for tests and for running the
handshake without a dataplane; :func:`make_sa` builds the SA object the
sink expects.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .handshake import Lifetime
from .keys import KeyMaterial


@dataclass
class TunnelSA:
    """An SA as the manager hands it over; ``key`` is live key material, never shown."""

    spi: int
    direction: str
    cipher: str
    key: KeyMaterial = field(repr=False)
    tunnel_src: str
    tunnel_dst: str
    selectors: list[dict[str, Any]]
    lifetime: Lifetime
    replay_window: int = 64
    esn: bool = False


def make_sa(sink: Any, sa: TunnelSA) -> Any:
    """The object ``sink.sa_add`` takes: the TunnelSA itself for a :class:`MemorySink`,
    a :class:`pydp.esp.SA` for a :class:`pydp.Dataplane`.

    The esp SA gets the key from the live buffer; ``Dataplane.sa_remove`` wipes
    the SA's copy and the C copy, the manager wipes this one.
    """
    if isinstance(sink, MemorySink):
        return sa
    from .. import esp
    lt = sa.lifetime
    life = esp.Lifetime(**{k: (v or None) for k, v in lt.to_dict().items()})
    return esp.SA(spi=sa.spi, direction=sa.direction, cipher=sa.cipher, key=sa.key.buffer(),
                  tunnel_src=sa.tunnel_src, tunnel_dst=sa.tunnel_dst,
                  selectors=[dict(x) for x in sa.selectors], replay_window=sa.replay_window,
                  esn=sa.esn, lifetime=life)


class MemorySink:
    """An in-memory SA table with the dataplane's ESP contract (tests, dry runs).

    ``traffic(spi, packets, bytes_)`` bumps an SA's counters as a data path would;
    ``event(stage, spi, name)`` queues a data-path event.
    """

    def __init__(self) -> None:
        """Empty tables."""
        self.sas: dict[str, dict[int, TunnelSA]] = {}
        self.counters: dict[int, list[int]] = {}
        self.events: dict[str, list[dict]] = {}
        self.removed: list[TunnelSA] = []
        self.log: list[tuple[str, str, int, float]] = []  # (what, direction, spi, time)
        self._lock = threading.Lock()

    def sa_add(self, stage: str, sa: TunnelSA) -> None:
        """Install; an SPI already in the stage is refused (as the data path does)."""
        with self._lock:
            tab = self.sas.setdefault(stage, {})
            if sa.spi in tab:
                from ..errors import AlreadyExists
                raise AlreadyExists(f"stage {stage}: SPI {sa.spi:#x} is installed")
            tab[sa.spi] = sa
            self.counters[sa.spi] = [0, 0]
            self.log.append(("add", sa.direction, sa.spi, time.monotonic()))

    def sa_remove(self, stage: str, spi: int) -> None:
        """Remove and wipe the key (as the data path wipes its copy)."""
        with self._lock:
            sa = self.sas.get(stage, {}).pop(spi, None)
            if sa is None:
                from ..errors import NotFound
                raise NotFound(f"stage {stage}: no SA with SPI {spi:#x}")
            sa.key.wipe()
            self.removed.append(sa)
            self.log.append(("remove", sa.direction, spi, time.monotonic()))

    def sa_list(self, stage: str) -> list[dict[str, Any]]:
        """The installed SAs with counters and lifetimes, never keys."""
        with self._lock:
            return [{"spi": s.spi, "direction": s.direction, "cipher": s.cipher,
                     "tunnel_src": s.tunnel_src, "tunnel_dst": s.tunnel_dst,
                     "packets": self.counters[s.spi][0], "bytes": self.counters[s.spi][1],
                     "lifetime": s.lifetime.to_dict()}
                    for s in self.sas.get(stage, {}).values()]

    def sa_events(self, stage: str) -> list[dict[str, Any]]:
        """Events queued since the last call."""
        with self._lock:
            return self.events.pop(stage, [])

    # -- test helpers --
    def traffic(self, spi: int, packets: int, bytes_: int) -> None:
        """Count traffic on an SA."""
        with self._lock:
            c = self.counters[spi]
            c[0] += packets
            c[1] += bytes_

    def event(self, stage: str, spi: int, name: str) -> None:
        """Queue a data-path event (e.g. ``"seq-exhaustion"``)."""
        with self._lock:
            self.events.setdefault(stage, []).append({"spi": spi, "event": name})

    def spis(self, stage: str, direction: str | None = None) -> list[int]:
        """SPIs installed in ``stage`` (in install order), optionally of one direction."""
        with self._lock:
            return [s for s, sa in self.sas.get(stage, {}).items()
                    if direction is None or sa.direction == direction]
