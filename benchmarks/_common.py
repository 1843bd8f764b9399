"""Shared helpers of the benchmark scripts (run by hand; not collected by pytest)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time

import torch


def device_of(name: str) -> torch.device:
    """The benchmark's ``--device``, refused clearly when it is not there."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible to torch {torch.__version__}")
    return dev


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work, so that a timing covers it (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, repeats: int = 15, warmup: int = 2, device=None) -> tuple[float, float]:
    """(median, min) wall seconds of ``fn()`` over ``repeats`` runs after ``warmup``; on a
    GPU ``device`` each run includes waiting for its kernels."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), min(ts)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import pennylane as qml

        pl = qml.__version__
    except ImportError:
        pl = "not installed"
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    gpu = f"; gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"date: {date}; nproc: {os.cpu_count()}; cpu: {cpu}{gpu}; torch threads: {torch.get_num_threads()}; "
        f"python {platform.python_version()}; torch {torch.__version__}; pennylane {pl}; "
        f"loadavg at start: {open('/proc/loadavg').read().split()[:3]}"
    )


def ms(t: float) -> str:
    return f"{t * 1e3:9.2f}"
