"""Shared fixtures. The EAL starts once per process: one session for all tests."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
_seq = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("pydp's tests need root (DPDK, hugepages, netns)")


@pytest.fixture(scope="session")
def eal():
    """The process's one EAL (hugepages if they can be had, else --no-huge)."""
    import pydp.eal
    return pydp.eal.init()


@pytest.fixture
def ring_name(eal):
    """A factory of unique net_ring devargs: ring_name() -> 'net_ring_t7'."""
    def make(queues: int = 1) -> str:
        n = f"net_ring_t{next(_seq)}"
        return n if queues == 1 else f"{n},queues={queues}"
    return make


@pytest.fixture
def vdev_name(eal):
    """A factory of unique vdev names for a driver: vdev_name('net_null') -> 'net_null7'."""
    def make(driver: str) -> str:
        return f"{driver}{next(_seq) + 100}"
    return make
