"""Data-parallel training throughput (samples/s): the papers' MNIST CNN trained through QT
(and classically, for reference) in 1 process and in 2 torchrun processes (gloo, DDP),
with the same global batch and the trainer's own step (``qtrain.train.train_step``).

    PYTHONPATH=src python benchmarks/bench_ddp.py                  # launches every run, prints the table
    PYTHONPATH=src python benchmarks/bench_ddp.py --batch 64 512 --blocks 5

Every configuration runs in fresh processes started by torch's launcher
(``qtrain.distributed.launch``), even the 1-process ones, so all pay the same start-up
(not timed). A run: warm-up steps, then ``--blocks`` blocks of ``--steps`` steps, each
block timed between two barriers; reported: the median block's samples/s (global batch x
steps / seconds) and the best block's.

Each rank evaluates the whole circuit and mapping every step (that is what keeps the
generated weights identical on every rank), so only the per-example work splits: expect
the gain to grow with the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def worker(a: argparse.Namespace) -> None:
    import qtrain
    from qtrain import distributed
    from qtrain.models import build_model
    from qtrain.train import train_step

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = distributed.setup("cpu")
    world = distributed.get_world_size()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 1, 28, 28, generator=g)  # random MNIST-shaped data: the cost does not depend on it
    y = torch.randint(0, 10, (2048,), generator=g)
    rows = []
    for kind in a.models:
        for batch in a.batch:
            torch.manual_seed(0)
            model = build_model("paper-cnn")
            if kind == "qt":
                model = qtrain.QuantumTrain(model, qtrain.QTConfig(depth=a.depth, ansatz=a.ansatz, mapping=a.mapping))
            net = distributed.data_parallel(model, device) if world > 1 else model
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            order = torch.Generator().manual_seed(1)  # the same batches on every rank

            def step():
                train_step(net, opt, x, y, torch.randint(0, len(y), (batch,), generator=order), device)

            for _ in range(a.warmup):
                step()
            rates = []
            for _ in range(a.blocks):
                distributed.barrier()
                t = time.perf_counter()
                for _ in range(a.steps):
                    step()
                distributed.barrier()
                rates.append(a.steps * batch / (time.perf_counter() - t))
            rows.append({"model": kind, "batch": batch, "processes": world, "threads": torch.get_num_threads(),
                         "median": statistics.median(rates), "best": max(rates)})
    if distributed.is_main_process():
        Path(a.json).write_text(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["qt", "classical"], choices=["qt", "classical"])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="global batch sizes")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--ansatz", default="u3-cu3-ring")
    ap.add_argument("--mapping", default="mlp")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    from qtrain import distributed

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print(machine())
    print(f"paper-cnn (M = 6,690), QT: {a.ansatz} L = {a.depth}, mapping {a.mapping}; float32; gloo; "
          f"{a.blocks} blocks of {a.steps} steps after {a.warmup} warm-up steps")
    settings = [(1, cores), (1, max(1, cores // 2)), (2, max(1, cores // 2))]
    settings = list(dict.fromkeys(settings))  # one core: (1, 1) once
    results = []
    for nproc, threads in settings:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            argv = [__file__, "--worker", "--json", f.name, "--models", *a.models, "--batch", *map(str, a.batch),
                    "--depth", str(a.depth), "--ansatz", a.ansatz, "--mapping", a.mapping, "--warmup", str(a.warmup),
                    "--steps", str(a.steps), "--blocks", str(a.blocks)]
            rc = distributed.launch(argv, nproc, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            if rc != 0:
                raise SystemExit(f"the {nproc}-process run failed ({rc})")
            results += json.loads(Path(f.name).read_text())
    print(f"\n| model | global batch | processes x threads | samples/s (median) | samples/s (best) | vs 1 process x {cores} threads |")
    print("|---|---|---|---|---|---|")
    for r in results:
        base = next(b for b in results if b["model"] == r["model"] and b["batch"] == r["batch"]
                    and b["processes"] == 1 and b["threads"] == cores)
        print(f"| {'QT' if r['model'] == 'qt' else 'classical'} | {r['batch']} | {r['processes']} x {r['threads']} | "
              f"{r['median']:.0f} | {r['best']:.0f} | {r['median'] / base['median']:.2f}x |")


if __name__ == "__main__":
    main()
