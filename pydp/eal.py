"""Start DPDK's EAL, once per process.

``rte_eal_init`` works once per process, so :func:`init` is idempotent: the
first call starts the EAL with the options given, later calls return the
same :class:`EalInfo` (and refuse conflicting options). Hugepages are used
when they can be reserved; otherwise the EAL runs with ``--no-huge``. The
choice is reported in :attr:`EalInfo.memory`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ._core import check, ffi, lib
from .errors import InvalidArgument, PermissionDenied

HUGE_MOUNT = Path("/dev/hugepages")


@dataclass(frozen=True)
class EalInfo:
    """What the running EAL was started with."""

    hugepages: bool
    memory_mb: int
    main_lcore: int
    workers: tuple[int, ...]
    args: tuple[str, ...] = field(default=())

    @property
    def memory(self) -> str:
        """'hugepages' or 'no-huge (4 KiB pages)'."""
        return "hugepages" if self.hugepages else "no-huge (4 KiB pages)"


_info: EalInfo | None = None


def _meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _hugetlbfs_mounted() -> bool:
    try:
        return any(ln.split()[2] == "hugetlbfs" for ln in
                   Path("/proc/mounts").read_text().splitlines())
    except OSError:
        return False


def reserve_hugepages(memory_mb: int) -> bool:
    """Make ``memory_mb`` of 2 MiB hugepages free and mounted; True on success.

    Needs root. Adds pages to ``vm.nr_hugepages`` when too few are free and
    mounts hugetlbfs on /dev/hugepages if nothing is mounted.
    """
    if os.geteuid() != 0:
        return False
    size_kb = _meminfo("Hugepagesize") or 2048
    need = (memory_mb * 1024 + size_kb - 1) // size_kb
    free = _meminfo("HugePages_Free")
    try:
        if free < need:
            total = _meminfo("HugePages_Total")
            Path("/proc/sys/vm/nr_hugepages").write_text(str(total + need - free))
        if not _hugetlbfs_mounted():
            HUGE_MOUNT.mkdir(parents=True, exist_ok=True)
            if os.system(f"mount -t hugetlbfs nodev {HUGE_MOUNT} 2>/dev/null") != 0:
                return False
    except OSError:
        return False
    return _meminfo("HugePages_Free") >= need and _hugetlbfs_mounted()


def default_lcores() -> str:
    """Main lcore 0 plus two workers, spread over this machine's CPUs.

    On a two-CPU machine both workers share CPU 1 (``--lcores 0@0,1@1,2@1``):
    a pipeline normally runs on one worker, and tests that use two still work.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 3:
        return ",".join(f"{i}@{c}" for i, c in enumerate(cpus))
    last = cpus[-1]
    return f"0@{cpus[0]},1@{last},2@{last}"


def init(lcores: str | None = None, hugepages: bool | None = None,
         memory_mb: int = 1024, extra_args: list[str] | None = None,
         pci: bool = False, log_file: str | None = None) -> EalInfo:
    """Start the EAL (first call) or return how it was started (later calls).

    ``lcores`` is an EAL ``--lcores`` map (default :func:`default_lcores`);
    lcore 0 is the main lcore and stays with Python. ``hugepages``: True to
    require them, False for ``--no-huge``, None to use them if they can be
    reserved. ``pci``: scan the PCI bus (needed for NIC ports; off by default
    so virtual-port runs never touch the host's NICs). ``extra_args`` are
    appended; ``PYDP_EAL_ARGS`` adds more. ``log_file``: write DPDK's own
    log there instead of stderr.
    """
    global _info
    if _info is not None:
        if lcores is not None and lcores != _lcore_arg(_info.args):
            raise InvalidArgument(
                f"EAL already runs with --lcores {_lcore_arg(_info.args)}; it starts once "
                "per process and cannot be restarted with other lcores")
        return _info
    if os.geteuid() != 0:
        raise PermissionDenied("pydp needs root (DPDK maps device and hugepage memory)")
    if memory_mb < 64:
        raise InvalidArgument(f"memory_mb: {memory_mb} is below 64")
    lcores = lcores or os.environ.get("PYDP_LCORES") or default_lcores()
    if hugepages is None:
        env = os.environ.get("PYDP_HUGEPAGES")
        hugepages = None if env is None else env not in ("0", "no", "false")
    use_huge = reserve_hugepages(memory_mb) if hugepages in (None, True) else False
    if hugepages and not use_huge:
        raise PermissionDenied(f"cannot reserve {memory_mb} MiB of hugepages")
    args = ["pydp", "--lcores", lcores, "--main-lcore", "0",
            f"--file-prefix=pydp{os.getpid()}", "--log-level=4"]
    if not pci:
        args.append("--no-pci")
    if use_huge:
        args += ["--in-memory", "--huge-dir", str(HUGE_MOUNT)]
    else:
        # DPDK refuses --in-memory with --no-huge ("--legacy-mem is not compatible
        # with --in-memory"); --no-shconf is the part of it that applies here
        args += ["--no-huge", "--no-shconf", "-m", str(memory_mb)]
    args += list(extra_args or []) + shlex.split(os.environ.get("PYDP_EAL_ARGS", ""))
    if log_file:
        check(lib.pd_log_to_file(log_file.encode()))
    keep = [ffi.new("char[]", a.encode()) for a in args]
    argv = ffi.new("char *[]", keep)
    check(lib.pd_eal_init(len(args), argv))
    workers = tuple(i for i in range(lib.pd_lcore_count()) if lib.pd_lcore_role(i) == 2)
    _info = EalInfo(hugepages=bool(lib.pd_eal_hugepages()), memory_mb=memory_mb,
                    main_lcore=int(lib.pd_main_lcore()), workers=workers, args=tuple(args))
    return _info


def _lcore_arg(args: tuple[str, ...]) -> str:
    return args[args.index("--lcores") + 1] if "--lcores" in args else ""


def info() -> EalInfo | None:
    """The running EAL's :class:`EalInfo`, or None before :func:`init`."""
    return _info


def tsc_hz() -> int:
    """TSC ticks per second (for cycles-per-packet figures)."""
    return int(lib.pd_tsc_hz())


def tsc() -> int:
    """The current TSC value."""
    return int(lib.pd_tsc())
