"""Is the FashionMNIST depth study's L = 16 gap to the published number a matter of training
length? Continues a finished 50-epoch `qtrain reproduce fashion-depth` run (copied here, the
preset's own directory untouched) to 100 epochs with the same settings, bit for bit as if it had
been started with 100 epochs (the checkpoint holds the optimiser, scheduler and data order).

    OMP_NUM_THREADS=1 python experiments/fashion-longer/run.py [--depth 16] [--seed 0] [--epochs 100]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from qtrain import QTConfig
from qtrain.experiment import run_job
from qtrain.reproduce import EXPERIMENTS
from qtrain.train import TrainConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    a = ap.parse_args()
    exp = EXPERIMENTS["fashion-depth"]
    src = HERE.parent / "reproduce" / "fashion-depth" / f"qt-L{a.depth}-seed{a.seed}"
    dst = HERE / f"qt-L{a.depth}-seed{a.seed}-e{a.epochs}"
    if not dst.exists():
        if not (src / "results.json").exists():
            raise SystemExit(f"{src} has not finished its 50 epochs yet")
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    qt = QTConfig(**{**exp.qt, "depth": a.depth, "seed": a.seed})
    train = TrainConfig(**{**exp.train, "epochs": a.epochs}, seed=a.seed)
    res = run_job(dst, dataset=exp.dataset, model=exp.model, qt=qt, train=train, runs=("qt",), resume=True,
                  skip_finished=True, progress=False, log=print, label=f"L={a.depth} seed {a.seed} to {a.epochs} epochs")
    print(f"L = {a.depth}, seed {a.seed}, {res['qt']['epochs']} epochs: test {100 * res['qt']['test_acc']:.2f}%")


if __name__ == "__main__":
    main()
