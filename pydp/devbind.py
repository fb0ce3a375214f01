"""NICs DPDK could drive, listed from sysfs (the ``pydp ports`` command).

This is the read-only half of ``dpdk-devbind.py --status``: it walks
``/sys/bus/pci/devices``, keeps the network-class (0x02xxxx) functions, and
reports for each its driver, its kernel interface if it has one, and whether
that interface carries the machine's own traffic (*Active*). It never binds or
unbinds anything, and needs neither lspci nor root. Vendor/device names come
from ``pci.ids`` when installed (``/usr/share/misc/pci.ids`` or
``/usr/share/hwdata/pci.ids``), otherwise the hex ids are shown.

A NIC is usable as a pydp port once bound to a DPDK-compatible driver; its
devargs is then simply its PCI address, e.g. ``Port("0000:00:04.0")``.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass

DPDK_DRIVERS = frozenset({"vfio-pci", "uio_pci_generic", "igb_uio"})
"""Drivers that hand the device to a DPDK userspace PMD."""

PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids")
"""Where pci.ids is looked for, first found wins."""

NETWORK_CLASS = 0x02

_PCI_ADDR_RE = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_IFF_UP = 0x1
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class NicInfo:
    """One network-class PCI function, as seen in sysfs."""

    pci: str  # "0000:00:03.0"
    vendor: str  # "0x1af4"
    device: str  # "0x1000"
    description: str  # "Red Hat, Inc. Virtio network device", or the ids
    driver: str | None  # current driver, None when unbound
    interface: str | None  # kernel netdev name(s), comma-separated, if any
    dpdk_bound: bool  # driver in DPDK_DRIVERS
    active: bool  # the interface carries the host's traffic: do not bind it
    numa_node: int  # -1 when unknown / single node


# --------------------------------------------------------------------- sysfs


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _hex_id(raw: str | None) -> str:
    """Normalise a sysfs id ("0x1AF4\\n") to "0x1af4"; unknown -> "0x0000"."""
    if not raw:
        return "0x0000"
    try:
        return f"0x{int(raw, 16):04x}"
    except ValueError:
        return raw.lower()


def _pci_sort_key(addr: str) -> tuple[int, ...]:
    dom, bus, devfn = addr.split(":")
    dev, fn = devfn.split(".")
    return (int(dom, 16), int(bus, 16), int(dev, 16), int(fn, 16))


def _net_dirs(devdir: str) -> list[str]:
    """The ``net`` directories of a PCI function.

    Most drivers put the netdev at ``<dev>/net/<if>``; virtio puts it one
    level down (``<dev>/virtio2/net/<if>``). Only real subdirectories are
    followed: symlinks such as ``physfn`` / ``virtfnN`` / ``driver`` point at
    other devices whose interfaces are not this function's.
    """
    found = []
    top = os.path.join(devdir, "net")
    if os.path.isdir(top):
        found.append(top)
    try:
        entries = list(os.scandir(devdir))
    except OSError:
        return found
    for entry in entries:
        if entry.name == "net":
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        sub = os.path.join(entry.path, "net")
        if os.path.isdir(sub) and not os.path.islink(sub):
            found.append(sub)
    return found


def _interfaces(devdir: str) -> dict[str, str]:
    """Kernel interfaces of a PCI function: name -> its sysfs directory."""
    ifaces: dict[str, str] = {}
    for netdir in _net_dirs(devdir):
        try:
            names = sorted(os.listdir(netdir))
        except OSError:
            continue
        for name in names:
            ifaces.setdefault(name, os.path.join(netdir, name))
    return ifaces


def _link_up(ifdir: str) -> bool:
    """Operstate 'up'; or 'unknown' (drivers that don't report it) with IFF_UP set."""
    state = (_read(os.path.join(ifdir, "operstate")) or "").lower()
    if state == "up":
        return True
    if state == "unknown":
        try:
            return bool(int(_read(os.path.join(ifdir, "flags")) or "0", 16) & _IFF_UP)
        except ValueError:
            return False
    return False


# ----------------------------------------------------------------- pci.ids


@functools.lru_cache(maxsize=4)
def _load_pci_ids(path: str) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    """Vendor and device names from a pci.ids file (empty dicts if unreadable)."""
    vendors: dict[int, str] = {}
    devices: dict[tuple[int, int], str] = {}
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return vendors, devices
    with f:
        vendor: int | None = None
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("C "):  # device classes: end of vendor list
                break
            if line.startswith("\t\t"):  # subsystem
                continue
            if line.startswith("\t"):
                if vendor is None:
                    continue
                ident, _, name = line.strip().partition(" ")
                try:
                    devices[(vendor, int(ident, 16))] = name.strip()
                except ValueError:
                    pass
                continue
            ident, _, name = line.rstrip("\n").partition(" ")
            try:
                vendor = int(ident, 16)
            except ValueError:
                vendor = None
                continue
            vendors[vendor] = name.strip()
    return vendors, devices


def _find_pci_ids() -> str | None:
    for path in PCI_IDS_PATHS:
        if os.path.isfile(path):
            return path
    return None


def _describe(vendor: str, device: str, pci_ids: str | None) -> str:
    """"<Vendor> <Device>" from pci.ids, else lspci-like fallbacks with hex ids."""
    v, d = int(vendor, 16), int(device, 16)
    vendors, devices = _load_pci_ids(pci_ids) if pci_ids else ({}, {})
    vname, dname = vendors.get(v), devices.get((v, d))
    if vname and dname:
        return f"{vname} {dname}"
    if vname:
        return f"{vname} Device {d:04x}"
    return f"Device {v:04x}:{d:04x}"


# ------------------------------------------------------------ active check


def _v4_route_ifaces(procfs: str) -> set[str]:
    """Interfaces with an IPv4 route (169.254/16 excepted, as devbind does).

    A connected route exists for every IPv4 address with a prefix shorter
    than /32, so this covers both "has an address" and "has a default route".
    """
    out: set[str] = set()
    try:
        with open(os.path.join(procfs, "net", "route"), encoding="ascii") as f:
            next(f, None)  # header
            for line in f:
                cols = line.split()
                if len(cols) < 8:
                    continue
                try:
                    dest = socket.htonl(int(cols[1], 16))  # stored little-endian
                except ValueError:
                    continue
                if dest >> 16 == 0xA9FE:  # 169.254.0.0/16 link-local
                    continue
                out.add(cols[0])
    except OSError:
        pass
    return out


def _v6_addr_ifaces(procfs: str) -> set[str]:
    """Interfaces holding a non-link-local, non-host-scope IPv6 address."""
    out: set[str] = set()
    try:
        with open(os.path.join(procfs, "net", "if_inet6"), encoding="ascii") as f:
            for line in f:
                cols = line.split()
                if len(cols) < 6:
                    continue
                try:
                    scope = int(cols[3], 16)
                except ValueError:
                    continue
                if scope in (0x10, 0x20):  # host, link
                    continue
                out.add(cols[5])
    except OSError:
        pass
    return out


def _v6_default_ifaces(procfs: str) -> set[str]:
    """Interfaces carrying an IPv6 default route (::/0)."""
    out: set[str] = set()
    try:
        with open(os.path.join(procfs, "net", "ipv6_route"), encoding="ascii") as f:
            for line in f:
                cols = line.split()
                if len(cols) < 10:
                    continue
                if cols[0] == "0" * 32 and cols[1] == "00" and cols[9] != "lo":
                    out.add(cols[9])
    except OSError:
        pass
    return out


def _has_ipv4_addr_live(ifname: str) -> bool:
    """Ask the running kernel whether ``ifname`` has an IPv4 address.

    Catches /32 addresses, which make no entry in /proc/net/route. Uses
    ``ip -o -4 addr show dev IF``, or the SIOCGIFADDR ioctl if iproute2 is
    not installed.
    """
    ip = shutil.which("ip")
    if ip:
        try:
            res = subprocess.run([ip, "-o", "-4", "addr", "show", "dev", ifname],
                                 capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            res = None
        if res is not None and res.returncode == 0:
            return " inet " in f" {res.stdout}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), _SIOCGIFADDR,
                        struct.pack("256s", ifname.encode()[:15]))
        return True
    except OSError as e:
        return e.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO, errno.EINVAL)


class _ActiveProbe:
    """Decides *Active* for interfaces, reading /proc once per listing."""

    def __init__(self, procfs: str) -> None:
        self.v4 = _v4_route_ifaces(procfs)
        self.v6 = _v6_addr_ifaces(procfs) | _v6_default_ifaces(procfs)
        # Live probing only makes sense against the running host's /proc.
        self.live = os.path.realpath(procfs) == "/proc"

    def active(self, ifname: str, ifdir: str) -> bool:
        if not _link_up(ifdir):
            return False
        if ifname in self.v4 or ifname in self.v6:
            return True
        return self.live and _has_ipv4_addr_live(ifname)


# ------------------------------------------------------------------ public


def list_nics(sysfs: str = "/sys", *, procfs: str = "/proc",
              pci_ids: str | None = None) -> list[NicInfo]:
    """Network-class (0x02xxxx) PCI devices, sorted by address.

    ``sysfs`` / ``procfs`` are the roots to read (overridable for tests).
    ``pci_ids`` is the pci.ids file for names; ``None`` searches
    :data:`PCI_IDS_PATHS`, ``""`` disables names (hex ids only).

    ``active`` is True when one of the device's interfaces is up (operstate
    ``up``, or ``unknown`` with IFF_UP) and has an IPv4 route, a global IPv6
    address or an IPv6 default route; against the real ``/proc`` an IPv4
    address is also checked live (``ip addr``), which catches /32 addresses.
    """
    devroot = os.path.join(sysfs, "bus", "pci", "devices")
    try:
        addrs = [a for a in os.listdir(devroot) if _PCI_ADDR_RE.match(a)]
    except OSError:
        return []
    if pci_ids is None:
        pci_ids = _find_pci_ids()
    probe: _ActiveProbe | None = None
    nics: list[NicInfo] = []
    for addr in sorted(addrs, key=_pci_sort_key):
        devdir = os.path.join(devroot, addr)
        cls = _read(os.path.join(devdir, "class"))
        try:
            if cls is None or (int(cls, 16) >> 16) != NETWORK_CLASS:
                continue
        except ValueError:
            continue
        vendor = _hex_id(_read(os.path.join(devdir, "vendor")))
        device = _hex_id(_read(os.path.join(devdir, "device")))
        drvlink = os.path.join(devdir, "driver")
        driver = os.path.basename(os.readlink(drvlink)) if os.path.islink(drvlink) else None
        ifaces = _interfaces(devdir)
        active = False
        if ifaces:
            probe = probe or _ActiveProbe(procfs)
            active = any(probe.active(name, ifdir) for name, ifdir in ifaces.items())
        try:
            numa = int(_read(os.path.join(devdir, "numa_node")) or "-1")
        except ValueError:
            numa = -1
        nics.append(NicInfo(
            pci=addr,
            vendor=vendor,
            device=device,
            description=_describe(vendor, device, pci_ids or None),
            driver=driver,
            interface=",".join(ifaces) or None,
            dpdk_bound=driver in DPDK_DRIVERS,
            active=active,
            numa_node=numa,
        ))
    return nics


def format_line(nic: NicInfo) -> str:
    """One devbind-style line: address, 'description', drv=, if=, numa=, *Active*."""
    parts = [nic.pci, f"'{nic.description}'"]
    if nic.driver:
        parts.append(f"drv={nic.driver}")
    if nic.interface:
        parts.append(f"if={nic.interface}")
    if nic.numa_node >= 0:
        parts.append(f"numa={nic.numa_node}")
    if nic.active:
        parts.append("*Active*")
    return " ".join(parts)


def format_table(nics: list[NicInfo]) -> str:
    """The ``pydp ports`` report, sectioned like ``dpdk-devbind.py --status``.

    Sections: 'Network devices using a DPDK-compatible driver', 'Network
    devices using a kernel driver' and, if any, 'Other network devices'
    (unbound). Ends with the hint that a NIC's pydp devargs is its PCI address.
    """
    sections = [
        ("Network devices using a DPDK-compatible driver",
         [n for n in nics if n.dpdk_bound], True),
        ("Network devices using a kernel driver",
         [n for n in nics if n.driver and not n.dpdk_bound], True),
        ("Other network devices",
         [n for n in nics if not n.driver], False),
    ]
    out: list[str] = []
    for title, members, always in sections:
        if not members and not always:
            continue
        out += [title, "=" * len(title)]
        out += [format_line(n) for n in members] or ["<none>"]
        out.append("")
    dpdk = [n for n in nics if n.dpdk_bound]
    example = dpdk[0].pci if dpdk else "0000:03:00.0"
    out.append(f"pydp devargs for a NIC is its PCI address, e.g. Port(\"{example}\"); "
               "bind it to vfio-pci first (dpdk-devbind.py -b vfio-pci ADDR).")
    if any(n.active for n in nics):
        out.append("*Active* NICs carry this machine's own traffic: do not bind them to DPDK.")
    return "\n".join(out) + "\n"
