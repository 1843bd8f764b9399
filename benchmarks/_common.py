"""Shared helpers of the benchmark scripts (run by hand; not collected by pytest)."""

from __future__ import annotations

import json
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


def machine_info() -> dict:
    """Where and when a benchmark ran: date, CPU, GPU, threads, versions, load."""
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
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except OSError:
        load = []
    from qtrain.circuits import kernel

    return {
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pennylane": pl,
        "loadavg": load,
        "circuit_kernel": kernel.available(),  # qtrain's compiled RY + CNOT kernel built and on
    }


def machine(info: dict | None = None) -> str:
    """:func:`machine_info` as the one line every benchmark prints first."""
    i = info or machine_info()
    gpu = f"; gpu: {i['gpu']}" if i["gpu"] else ""
    return (
        f"date: {i['date']}; nproc: {i['nproc']}; cpu: {i['cpu']}{gpu}; torch threads: {i['torch_threads']}; "
        f"python {i['python']}; torch {i['torch']}; pennylane {i['pennylane']}; loadavg at start: {i['loadavg']}"
    )


def add_json_option(ap) -> None:
    ap.add_argument("--json", metavar="PATH", help="also write the results (rows, arguments, machine) to this JSON file")


def write_json(path: str | None, benchmark: str, args, info: dict, rows: list[dict], *, final: bool = True) -> None:
    """``{"benchmark", "machine", "args", "rows"}`` to ``path`` (nothing when ``path`` is None);
    times in seconds, memory in MiB. ``plot.py`` draws these files. The benchmarks call it
    after every row too (``final=False``: silently), so a run cut short keeps what it measured."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"benchmark": benchmark, "machine": info, "args": vars(args), "rows": rows}, f, indent=1)
        os.replace(tmp, path)
        if final:
            print(f"wrote {path}")


def ms(t: float) -> str:
    return f"{t * 1e3:9.2f}"
