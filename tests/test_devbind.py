"""pydp.devbind against a fake sysfs/procfs tree, and a smoke run on the real /sys."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pydp import devbind

VFIO = "0000:00:04.0"  # Intel 82599 VF bound to vfio-pci
KERNEL = "0000:00:03.0"  # virtio-net, kernel-bound, netdev under virtio0/, up with routes
UNBOUND = "0000:01:00.0"  # network class, no driver
KERNEL_IDLE = "0000:00:05.0"  # kernel-bound, interface down
OTHER = "0000:00:01.0"  # storage controller: not a NIC

PCI_IDS = """\
# fake pci.ids
1af4  Red Hat, Inc.
\t1041  Virtio 1.0 network device
\t\t1af4 1100  QEMU Virtual Machine
8086  Intel Corporation
\t10ed  82599 Ethernet Controller Virtual Function

C 02  Network controller
\t00  Ethernet controller
"""


def _dev(root: Path, addr: str, cls: str, vendor: str, device: str,
         driver: str | None = None, numa: str = "-1") -> Path:
    d = root / "devices" / "pci0000:00" / addr
    d.mkdir(parents=True)
    (d / "class").write_text(cls + "\n")
    (d / "vendor").write_text(vendor + "\n")
    (d / "device").write_text(device + "\n")
    (d / "numa_node").write_text(numa + "\n")
    link = root / "bus" / "pci" / "devices" / addr
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(d, link.parent))
    if driver:
        drv = root / "bus" / "pci" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(os.path.relpath(drv, d))
    return d


def _netdev(parent: Path, name: str, operstate: str, flags: str = "0x1003") -> None:
    n = parent / "net" / name
    n.mkdir(parents=True)
    (n / "operstate").write_text(operstate + "\n")
    (n / "flags").write_text(flags + "\n")


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    sysfs = tmp_path / "sys"
    _dev(sysfs, OTHER, "0x010802", "0x1af4", "0x1042", driver="virtio-pci")
    vfio = _dev(sysfs, VFIO, "0x020000", "0x8086", "0x10ed", driver="vfio-pci", numa="0")
    kern = _dev(sysfs, KERNEL, "0x020000", "0x1af4", "0x1041", driver="virtio-pci")
    (kern / "virtio0").mkdir()
    _netdev(kern / "virtio0", "pdtest0", "up")
    idle = _dev(sysfs, KERNEL_IDLE, "0x020000", "0x1af4", "0x1041", driver="virtio-pci")
    _netdev(idle, "pdtest1", "down", flags="0x1002")
    _dev(sysfs, UNBOUND, "0x020000", "0x15b3", "0x1017")
    # A VF's physfn symlink must not lend it the PF's interface.
    (vfio / "physfn").symlink_to(os.path.relpath(idle, vfio))

    procfs = tmp_path / "proc"
    (procfs / "net").mkdir(parents=True)
    (procfs / "net" / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "pdtest0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "pdtest0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        # a down interface's stale route must not make it active
        "pdtest1\t000300C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    (procfs / "net" / "if_inet6").write_text(
        "fe800000000000000000000000000001 05 40 20 80  pdtest1\n")
    (procfs / "net" / "ipv6_route").write_text("")
    ids = tmp_path / "pci.ids"
    ids.write_text(PCI_IDS)
    return {"sysfs": sysfs, "procfs": procfs, "pci_ids": ids}


def _list(fake: dict[str, Path], **kw: object) -> list[devbind.NicInfo]:
    return devbind.list_nics(str(fake["sysfs"]), procfs=str(fake["procfs"]),
                             pci_ids=str(fake["pci_ids"]), **kw)


def test_list_nics_fake_sysfs(fake: dict[str, Path]) -> None:
    nics = _list(fake)
    assert [n.pci for n in nics] == [KERNEL, VFIO, KERNEL_IDLE, UNBOUND]  # sorted, no OTHER
    by = {n.pci: n for n in nics}

    assert by[VFIO] == devbind.NicInfo(
        pci=VFIO, vendor="0x8086", device="0x10ed",
        description="Intel Corporation 82599 Ethernet Controller Virtual Function",
        driver="vfio-pci", interface=None, dpdk_bound=True, active=False, numa_node=0)
    assert by[KERNEL] == devbind.NicInfo(
        pci=KERNEL, vendor="0x1af4", device="0x1041",
        description="Red Hat, Inc. Virtio 1.0 network device",
        driver="virtio-pci", interface="pdtest0", dpdk_bound=False, active=True,
        numa_node=-1)
    assert by[KERNEL_IDLE].interface == "pdtest1"
    assert by[KERNEL_IDLE].driver == "virtio-pci"
    assert not by[KERNEL_IDLE].active and not by[KERNEL_IDLE].dpdk_bound
    assert by[UNBOUND].driver is None and by[UNBOUND].interface is None
    assert not by[UNBOUND].dpdk_bound and not by[UNBOUND].active
    assert by[UNBOUND].description == "Device 15b3:1017"  # not in pci.ids: hex ids


def test_active_rules(fake: dict[str, Path]) -> None:
    route = fake["procfs"] / "net" / "route"
    header = route.read_text().splitlines()[0] + "\n"
    kern_if = fake["sysfs"] / "devices" / "pci0000:00" / KERNEL / "virtio0" / "net" / "pdtest0"

    # up but no route / no address: not active
    route.write_text(header)
    assert not {n.pci: n for n in _list(fake)}[KERNEL].active
    # 169.254/16 link-local routes do not count
    route.write_text(header + "pdtest0\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n")
    assert not {n.pci: n for n in _list(fake)}[KERNEL].active
    # a global IPv6 address counts; a link-local one does not
    inet6 = fake["procfs"] / "net" / "if_inet6"
    inet6.write_text("fe800000000000000000000000000001 02 40 20 80  pdtest0\n")
    assert not {n.pci: n for n in _list(fake)}[KERNEL].active
    inet6.write_text("20010db8000000000000000000000001 02 40 00 80  pdtest0\n")
    assert {n.pci: n for n in _list(fake)}[KERNEL].active
    # an IPv6 default route counts
    inet6.write_text("")
    (fake["procfs"] / "net" / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000001 00000000 00450003  pdtest0\n")
    assert {n.pci: n for n in _list(fake)}[KERNEL].active
    # operstate 'unknown' counts as up only with IFF_UP
    (kern_if / "operstate").write_text("unknown\n")
    assert {n.pci: n for n in _list(fake)}[KERNEL].active
    (kern_if / "flags").write_text("0x1002\n")
    assert not {n.pci: n for n in _list(fake)}[KERNEL].active


def test_no_pci_ids_shows_hex(fake: dict[str, Path]) -> None:
    nics = {n.pci: n for n in _list(fake)}
    assert nics[KERNEL].description.startswith("Red Hat")
    plain = devbind.list_nics(str(fake["sysfs"]), procfs=str(fake["procfs"]), pci_ids="")
    assert {n.pci: n.description for n in plain}[KERNEL] == "Device 1af4:1041"


def test_format_table_sections(fake: dict[str, Path]) -> None:
    text = devbind.format_table(_list(fake))
    dpdk_at = text.index("Network devices using a DPDK-compatible driver")
    kern_at = text.index("Network devices using a kernel driver")
    other_at = text.index("Other network devices")
    assert dpdk_at < kern_at < other_at

    def line(addr: str) -> tuple[int, str]:
        for ln in text.splitlines():
            if ln.startswith(addr + " "):
                return text.index(ln), ln
        raise AssertionError(f"{addr} not in table:\n{text}")

    at, ln = line(VFIO)
    assert dpdk_at < at < kern_at and "drv=vfio-pci" in ln and "*Active*" not in ln
    at, ln = line(KERNEL)
    assert kern_at < at < other_at
    assert "drv=virtio-pci" in ln and "if=pdtest0" in ln and ln.endswith("*Active*")
    assert "'Red Hat, Inc. Virtio 1.0 network device'" in ln
    at, ln = line(KERNEL_IDLE)
    assert kern_at < at < other_at and "if=pdtest1" in ln and "*Active*" not in ln
    at, ln = line(UNBOUND)
    assert at > other_at and "drv=" not in ln
    assert OTHER not in text
    assert "devargs" in text and f'Port("{VFIO}")' in text


def test_format_table_empty() -> None:
    text = devbind.format_table([])
    assert text.count("<none>") == 2
    assert "Other network devices" not in text
    assert "devargs" in text


def test_real_sys() -> None:
    nics = devbind.list_nics()
    for n in nics:
        assert re.fullmatch(r"[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", n.pci), n
        assert re.fullmatch(r"0x[0-9a-f]{4}", n.vendor) and re.fullmatch(r"0x[0-9a-f]{4}", n.device)
        assert n.dpdk_bound == (n.driver in devbind.DPDK_DRIVERS)
        assert not (n.active and n.interface is None)
    assert [n.pci for n in nics] == sorted(n.pci for n in nics)
    devbind.format_table(nics)
