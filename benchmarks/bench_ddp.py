"""Data-parallel training throughput (samples/s): the papers' MNIST CNN trained through QT
(and classically, for reference) by 1 process and by 2 processes (DDP, gloo), with the same
global batch and the trainer's own step (``qtrain.train.train_step``).

    PYTHONPATH=src python benchmarks/bench_ddp.py                  # prints the table
    PYTHONPATH=src python benchmarks/bench_ddp.py --batch 64 512 --rounds 7

The script relaunches itself in 2 processes with torch's launcher
(``qtrain.distributed.launch``). For each model and global batch it then alternates, for
``--rounds`` rounds, three timed blocks of ``--steps`` steps: rank 0 alone with 2 threads
(the usual single-process run on this machine), rank 0 alone with 1 thread, and both ranks
with 1 thread each under DDP (the idle rank waits in a barrier, which sleeps). Alternating
in one launch spreads the load of other jobs over all three settings alike. Reported: the
median and the best round's samples/s (global batch x steps / seconds).

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

SETTINGS = ("1 x 2", "1 x 1", "2 x 1")  # processes x threads each


def worker(a: argparse.Namespace) -> None:
    import qtrain
    from qtrain import distributed
    from qtrain.models import build_model
    from qtrain.train import train_step

    device = distributed.setup("cpu")
    assert distributed.get_world_size() == 2, "the worker runs in 2 processes"
    rank = distributed.get_rank()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 1, 28, 28, generator=g)  # random MNIST-shaped data: the cost does not depend on it
    y = torch.randint(0, 10, (2048,), generator=g)

    def build(kind: str):
        torch.manual_seed(0)
        model = build_model("paper-cnn")
        if kind == "qt":
            model = qtrain.QuantumTrain(model, qtrain.QTConfig(depth=a.depth, ansatz=a.ansatz, mapping=a.mapping))
        return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    rows = []
    for kind in a.models:
        for batch in a.batch:
            # separate models: DDP's gradient hooks would fire in a single-process backward too
            single, single_opt = build(kind)
            model, opt = build(kind)
            ddp = distributed.data_parallel(model, device)
            single_order = torch.Generator().manual_seed(1)
            ddp_order = torch.Generator().manual_seed(1)  # the same batches on every rank

            def block(net, optimizer, steps: int, order: torch.Generator) -> float:
                t = time.perf_counter()
                for _ in range(steps):
                    train_step(net, optimizer, x, y, torch.randint(0, len(y), (batch,), generator=order), device)
                return steps * batch / (time.perf_counter() - t)

            rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
            for r in range(a.rounds + 1):  # round 0 warms every setting up, untimed
                steps = a.warmup if r == 0 else a.steps
                for threads in (2, 1):
                    if rank == 0:
                        torch.set_num_threads(threads)
                        rate = block(single, single_opt, steps, single_order)
                        if r:
                            rates[f"1 x {threads}"].append(rate)
                    distributed.barrier()
                torch.set_num_threads(1)
                distributed.barrier()
                rate = block(ddp, opt, steps, ddp_order)
                distributed.barrier()
                if r:
                    rates["2 x 1"].append(rate)
            rows += [{"model": kind, "batch": batch, "setting": s, "median": statistics.median(v), "best": max(v)}
                     for s, v in rates.items() if v]  # rank 1 times only its DDP blocks
    if rank == 0:
        Path(a.json).write_text(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["qt", "classical"], choices=["qt", "classical"])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="global batch sizes")
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--ansatz", default="u3-cu3-ring")
    ap.add_argument("--mapping", default="mlp")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per setting before the rounds")
    ap.add_argument("--steps", type=int, default=5, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    from qtrain import distributed

    print(machine())
    print(f"paper-cnn (M = 6,690), QT: {a.ansatz} L = {a.depth}, mapping {a.mapping}; float32; gloo; "
          f"{a.rounds} rounds of {a.steps} steps per setting, after {a.warmup} warm-up steps")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        argv = [__file__, "--worker", "--json", f.name, "--models", *a.models, "--batch", *map(str, a.batch),
                "--depth", str(a.depth), "--ansatz", a.ansatz, "--mapping", a.mapping, "--warmup", str(a.warmup),
                "--steps", str(a.steps), "--rounds", str(a.rounds)]
        if distributed.launch(argv, 2, env={**os.environ, "OMP_NUM_THREADS": "1"}) != 0:
            raise SystemExit("the 2-process run failed")
        rows = json.loads(Path(f.name).read_text())
    print("\n| model | global batch | processes x threads | samples/s (median) | samples/s (best) | median vs 1 x 2 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["batch"] == r["batch"] and b["setting"] == "1 x 2")
        print(f"| {'QT' if r['model'] == 'qt' else 'classical'} | {r['batch']} | {r['setting']} | {r['median']:.0f} | "
              f"{r['best']:.0f} | {r['median'] / base['median']:.2f}x |")


if __name__ == "__main__":
    main()
