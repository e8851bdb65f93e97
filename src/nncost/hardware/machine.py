"""This machine's memory now: what a new allocation of this process can still get.

A real run (``--device cpu``, ``--measure-time``, ``--measure``) puts a model's weights in this
machine's memory; one that needs more than there is gets the process killed by the kernel's OOM
killer, or takes the machine down with it.  Three limits apply, and the least of them is what is
available: the kernel's estimate of the memory it can hand out without swapping (``MemAvailable``
in ``/proc/meminfo``; psutil's ``virtual_memory().available`` where there is no ``/proc``), the
room under this process's cgroup memory limit (a container's ``memory.max`` less its
``memory.current``: ``MemAvailable`` shows the host's), and the room under its address-space limit
(``ulimit -v`` less the address space it maps already).
"""

from __future__ import annotations

import importlib
from pathlib import Path

PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as the largest page-aligned 64-bit number


def available_memory_bytes(proc: Path = PROC, cgroup: Path = CGROUP) -> int | None:
    """The least of the limits the module docstring names; None when none can be read."""
    found = [room for room in (_meminfo_available(proc), _cgroup_room(proc, cgroup), _address_space_room(proc))
             if room is not None]
    return min(found) if found else None


def _meminfo_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return _psutil_available()


def _psutil_available() -> int | None:
    try:
        psutil = importlib.import_module("psutil")
        return int(psutil.virtual_memory().available)
    except Exception:  # psutil is optional: absent, or unable to read this system
        return None


def _cgroup_room(proc: Path, cgroup: Path) -> int | None:
    """The room under this process's cgroup memory limit, v2 (``memory.max``) or v1
    (``memory.limit_in_bytes``); None: no limit, or none readable.  Inside a container the group
    is mounted at the root of ``cgroup``, where the path ``/proc/self/cgroup`` names does not exist."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    places = []
    for line in lines:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        if number == "0" and not controllers:
            places += [(cgroup / path.lstrip("/"), "memory.max", "memory.current"),
                       (cgroup, "memory.max", "memory.current")]
        elif "memory" in controllers.split(","):
            places += [(cgroup / "memory" / path.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"),
                       (cgroup / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for group, limit_file, usage_file in places:
        try:
            limit = (group / limit_file).read_text().strip()
            usage = int((group / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= UNLIMITED:
            return None
        return max(0, int(limit) - usage)
    return None


def _address_space_room(proc: Path) -> int | None:
    """The room under ``ulimit -v`` (RLIMIT_AS) less the address space mapped already (None: no limit)."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, limit - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return None
