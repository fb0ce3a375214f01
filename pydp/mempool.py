"""Mbuf pools, sized from the configuration, with a leak check."""

from __future__ import annotations

import itertools

from . import eal
from ._core import check, ffi, lib

_seq = itertools.count()


class Pool:
    """A DPDK packet-mbuf pool. ``avail() == size`` when nothing is in flight."""

    def __init__(self, n_mbufs: int, cache: int = 256, data_room: int = 2048,
                 name: str | None = None) -> None:
        """Create a pool of ``n_mbufs`` mbufs with ``data_room`` bytes each."""
        eal.init()
        self.name = name or f"pdpool{next(_seq)}"
        out = ffi.new("struct pd_pool **")
        check(lib.pd_pool_create(self.name.encode(), n_mbufs, cache, data_room, out))
        self._ptr = out[0]
        self.n_mbufs = n_mbufs

    def avail(self) -> int:
        """Mbufs in the pool now (per-lcore caches included)."""
        return int(lib.pd_pool_avail(self._ptr))

    def size(self) -> int:
        """Mbufs the pool was made with."""
        return int(lib.pd_pool_size(self._ptr))

    def in_use(self) -> int:
        """Mbufs out of the pool: held by rings, queues or the pipeline."""
        return self.size() - self.avail()

    def close(self) -> None:
        """Free the pool. Every mbuf must be back first."""
        if self._ptr is not None:
            lib.pd_pool_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pool_size_for(ports: list[tuple[int, int, int, int]], workers: int, stages: int,
                  ring_slots: int = 0) -> int:
    """Mbufs needed: every rx/tx descriptor, per-worker buffers and caches, plus slack.

    ``ports`` holds (rxq, txq, rx_desc, tx_desc) per port; ``ring_slots`` is
    what inject/capture rings may hold.
    """
    desc = sum(rxq * rxd + txq * txd for rxq, txq, rxd, txd in ports)
    per_worker = workers * (32 * 2 * (stages + len(ports) + 1) + 256)
    return max(4096, desc + per_worker + ring_slots + 2048)
