"""How many CPUs this process can really use: its CPU affinity and its cgroup's CPU quota.

``os.cpu_count()`` and PyTorch's default thread count see the host's CPUs. In a container
with a CPU quota (``docker run --cpus=2``, a Kubernetes CPU limit, systemd's ``CPUQuota=``)
PyTorch would still start a thread per host core, and each of its parallel regions then
waits for threads the quota does not let run (on the 2-core development machine one busy
core turned a 14 ms classification into about 500 ms: docs/performance.md). So the CLI
sets ``OMP_NUM_THREADS`` to what the quota allows before torch is imported
(:func:`limit_threads`), and spamguard's own core counts use :func:`usable_cores`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CPU_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
_set_here: str | None = None  # the OMP_NUM_THREADS limit_threads put in os.environ


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _is_dir(path: Path) -> bool:
    """Path.is_dir() without its exceptions: before Python 3.14 it raises what stat() does
    beyond "not found" (EACCES under a folder this user may not search, an LSM denial), and
    main() reads the quota before every command."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _own_groups(proc_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 ``cpu`` controller path (``/proc/self/cgroup``)."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _folders(base: Path, group: str | None) -> Iterator[Path]:
    """``base/group`` and its parents up to ``base`` (every level may set a limit); just
    ``base`` when the group is unknown or not visible (a container sees its own as root)."""
    folder = base / group.strip("/") if group else base
    if not _is_dir(folder):
        folder = base
    while True:
        yield folder
        if folder == base:
            return
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")  # "max 100000" (no limit) or "200000 100000"
    parts = text.split() if text else []
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    quota, period = (_read(folder / name) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # -1: no limit


def quota_cpus(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota over this process's cgroup and its parents, in CPUs (1.5 for
    150 ms per 100 ms); None when there is none or it cannot be read."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2_group, v1_group = _own_groups(proc_cgroup)
    quotas = [_v2_quota(folder) for folder in _folders(root, v2_group)]
    for name in V1_CPU_FOLDERS:
        if _is_dir(root / name):
            quotas += [_v1_quota(folder) for folder in _folders(root / name, v1_group)]
            break
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int:
    """The CPUs this process may run on (affinity), no more than its quota rounded up."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = quota_cpus(root, proc_cgroup)
    return max(1, min(count, math.ceil(quota))) if quota else count


def limit_threads(environ: MutableMapping[str, str] | None = None,
                  cores: int | None = None) -> int | None:
    """Set ``OMP_NUM_THREADS`` (which PyTorch reads when it is imported) to
    :func:`usable_cores` where that is fewer than the host's CPUs, unless it is set
    already; returns the value set, or None."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    cores = usable_cores() if cores is None else cores
    if cores >= (os.cpu_count() or 1):
        return None
    environ["OMP_NUM_THREADS"] = str(cores)
    if environ is os.environ:
        global _set_here
        _set_here = str(cores)
    return cores


def omp_threads_chosen() -> bool:
    """Whether ``OMP_NUM_THREADS`` holds a value someone chose, rather than none or the
    quota's that :func:`limit_threads` set (``serve`` then still gives each worker one)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return bool(value) and value != _set_here
