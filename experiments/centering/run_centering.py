"""Global (the papers') vs per-tensor centring of the mapping output, on the settings where
global centring was seen to collapse ReLU targets, and on the README's main job.

    OMP_NUM_THREADS=1 python experiments/centering/run_centering.py            # resumable
    OMP_NUM_THREADS=1 python experiments/centering/run_centering.py --jobs 2   # two processes
    python experiments/centering/run_centering.py --report                     # table only

Each (setting, centring, seed) trains with `qtrain.train.fit` (Adam, batch 64, the default
mlp mapping: (32, 32) GELU) and writes `runs/<name>.json` with its per-epoch test accuracy;
`results.md` / `results.json` tabulate the final test accuracy, mean ± std over seeds, and how
many seeds ended at chance (collapsed: final test accuracy below 15%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
CENTERINGS = ("global", "tensor")
# name: (dataset, model, ansatz, depth, lr, epochs); digits = sklearn 8x8 (1,437 / 360),
# mnist = the 5,000-image subset (4,000 / 1,000), both split by seed
SETTINGS = {
    "digits-cnn (ReLU), u3-cu3-ring L=2, lr 3e-3": ("digits", "digits-cnn", "u3-cu3-ring", 2, 3e-3, 10),
    "digits-cnn (ReLU), ry-cnot-ring L=2, lr 1e-3": ("digits", "digits-cnn", "ry-cnot-ring", 2, 1e-3, 10),
    "paper-cnn (no activation), u3-cu3-ring L=16, lr 1e-3": ("mnist", "paper-cnn", "u3-cu3-ring", 16, 1e-3, 10),
    "paper-cnn-relu, u3-cu3-ring L=16, lr 1e-3": ("mnist", "paper-cnn-relu", "u3-cu3-ring", 16, 1e-3, 10),
}
CHANCE = 0.15


def _name(setting: str, centering: str, seed: int) -> str:
    dataset, model, ansatz, depth, lr, _ = SETTINGS[setting]
    return f"{dataset}-{model}-{ansatz}-L{depth}-lr{lr:g}-{centering}-seed{seed}"


def run_one(setting: str, centering: str, seed: int) -> dict:
    import torch

    import qtrain
    from qtrain.data import load_dataset
    from qtrain.models import build_model
    from qtrain.train import TrainConfig, fit

    path = HERE / "runs" / f"{_name(setting, centering, seed)}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    dataset, model, ansatz, depth, lr, epochs = SETTINGS[setting]
    data = load_dataset(dataset, seed=seed)
    if dataset == "mnist":
        data = data.subset(4000, 1000)
    torch.manual_seed(seed)
    qt = qtrain.QuantumTrain(build_model(model), qtrain.QTConfig(depth=depth, ansatz=ansatz, centering=centering,
                                                                  seed=seed))
    hist = fit(qt, data, TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=seed), progress=False)
    rec = {"setting": setting, "centering": centering, "seed": seed, "trainable": qt.n_trainable,
           "test_acc": [h["test_acc"] for h in hist], "train_seconds": sum(h["seconds"] for h in hist),
           "qtrain_version": qtrain.__version__, "torch": torch.__version__}
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    tmp.replace(path)
    print(f"{setting} | {centering} | seed {seed}: {100 * rec['test_acc'][-1]:.1f}%", flush=True)
    return rec


def report() -> str:
    rows = ["| setting | centring | seeds | final test acc % (each seed) | mean ± std | collapsed (< 15%) |",
            "|---|---|---|---|---|---|"]
    records = []
    for setting in SETTINGS:
        for centering in CENTERINGS:
            runs = [json.loads(p.read_text()) for s in SEEDS
                    if (p := HERE / "runs" / f"{_name(setting, centering, s)}.json").exists()]
            final = [100 * r["test_acc"][-1] for r in runs]
            if not final:
                continue
            mean = statistics.fmean(final)
            std = statistics.stdev(final) if len(final) > 1 else 0.0
            dead = sum(f < 100 * CHANCE for f in final)
            rows.append(f"| {setting} | {centering} | {len(final)} | {', '.join(f'{f:.1f}' for f in final)} | "
                        f"{mean:.1f} ± {std:.1f} | {dead} of {len(final)} |")
            records.append({"setting": setting, "centering": centering, "seeds": len(final), "final_test_acc": final,
                            "mean": mean, "std": std, "collapsed": dead})
    table = "\n".join(rows)
    (HERE / "results.md").write_text("# Global vs per-tensor centring\n\n" + table + "\n")
    (HERE / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1, help="processes (one thread each)")
    ap.add_argument("--report", action="store_true", help="only tabulate the finished runs")
    a = ap.parse_args()
    if not a.report:
        plan = [(st, c, s) for st in SETTINGS for c in CENTERINGS for s in SEEDS]
        with ProcessPoolExecutor(a.jobs) as pool:
            list(pool.map(run_one, *zip(*plan)))
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
