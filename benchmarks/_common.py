"""Shared helpers of the benchmark scripts (run by hand; not collected by pytest)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time

import torch


def timeit(fn, repeats: int = 15, warmup: int = 2) -> tuple[float, float]:
    """(median, min) wall seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
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
    return (
        f"date: {date}; nproc: {os.cpu_count()}; cpu: {cpu}; torch threads: {torch.get_num_threads()}; "
        f"python {platform.python_version()}; torch {torch.__version__}; pennylane {pl}; "
        f"loadavg at start: {open('/proc/loadavg').read().split()[:3]}"
    )


def ms(t: float) -> str:
    return f"{t * 1e3:9.2f}"
