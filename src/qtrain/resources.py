"""Memory estimates, checked before anything large is allocated.

A QT configuration's memory grows with 2^N (the state vector, kept once per gate by
autograd) and with M (the mapping's activations). Running out of memory on a laptop
means an OOM kill or a swap storm, so :func:`check_fits` refuses a configuration that
will not fit, with the figure, before the first allocation.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_bytes", "check_fits", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # unreachable


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """Memory that can still be allocated on ``device`` (None when unknown).

    CPU: ``MemAvailable`` from ``/proc/meminfo`` (Linux), else physical memory; capped
    by the cgroup (container) limit minus its current usage when one is set
    (``/sys/fs/cgroup/memory.max``, or v1's ``memory.limit_in_bytes``).
    CUDA: free memory reported by the driver.
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = None
    limit = _cgroup_free_bytes()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
)


def _cgroup_free_bytes(files=_CGROUP_FILES) -> int | None:
    """The container's memory limit minus its usage, or None when unlimited / unknown."""
    for limit_path, usage_path in files:
        try:
            with open(limit_path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw == "max" or not raw.isdigit() or int(raw) >= 2**60:
            return None
        try:
            with open(usage_path) as f:
                used = int(f.read().strip())
        except (OSError, ValueError):
            used = 0
        return max(int(raw) - used, 0)
    return None


def check_fits(needed: float, device: torch.device | str | None, what: str, hint: str) -> None:
    """Raise :class:`MemoryError` when ``needed`` bytes exceed 90% of what ``device`` has.

    Args:
        needed: the estimate, in bytes.
        device: where it will be allocated.
        what: the configuration, for the message (``"a 24-qubit, depth-16 circuit"``).
        hint: how to make it fit.
    """
    avail = available_bytes(device)
    if avail is not None and needed > 0.9 * avail:
        raise MemoryError(
            f"{what} needs about {format_bytes(needed)} on {device or 'cpu'}, "
            f"but only {format_bytes(avail)} is available.\n{hint}\n"
            "(Pass check_memory=False to try anyway.)"
        )
