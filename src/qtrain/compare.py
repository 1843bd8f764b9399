"""``qtrain compare``: QT against classical controls at the same trainable budget.

For each budget (a QT configuration such as ``depth=16``) and seed, QT and every
baseline (:mod:`qtrain.baselines`, plus ``small-classical``: the widest member of the
model's family with at most the QT budget of trainable weights) are trained with the
same data, epochs and optimiser. With several learning rates (``lrs``) every method gets
the same search: 10% of the training set is held out, each method keeps the learning
rate with the best mean validation accuracy over seeds, and its *test* accuracy at that
rate is reported (the test set is never used to choose). Each run is a resumable
:func:`~qtrain.experiment.run_job` directory; rerunning continues and skips what finished.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._io import write_text_atomic
from .config import GENERATORS, QTConfig
from .experiment import run_job_or_skip
from .models import widest_within
from .reproduce import _count, _fmt, _mean_std, _plain_log_ticks
from .train import TrainConfig

__all__ = ["METHODS", "parse_budget", "run_compare"]

METHODS = ("qnn", *[g for g in GENERATORS if g != "qnn"], "small-classical")
"""Every method ``compare`` can run: the QNN, the baselines, and ``small-classical``."""


def parse_budget(text: str) -> dict:
    """``"depth=16,ansatz=ry-cnot-ring"`` -> ``{"depth": 16, "ansatz": "ry-cnot-ring"}``.

    Raises:
        ValueError: not ``key=value`` pairs of QTConfig fields.
    """
    out: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"`--budget-from` takes key=value pairs such as 'depth=16', got {part!r}")
        out[key] = int(value) if value.isdigit() else value
    QTConfig(**out)  # validates the keys and values
    return out


def run_compare(
    *,
    dataset: str,
    model: str,
    budgets: list[dict],
    seeds: list[int],
    train: dict,
    qt: dict,
    lrs: list[float] | None = None,
    methods: tuple[str, ...] = METHODS,
    out: str | Path,
    data_dir: str | None = None,
    limits: dict | None = None,
    progress: bool = True,
    log=None,
) -> dict:
    """Run every (budget, method, seed) and tabulate; returns ``{"table", "records", "dir"}``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Invalid method(s) {unknown}. Must be among {list(METHODS)}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted(set(seeds))
    lrs = sorted(set(lrs or [train["lr"]]))
    plan = []
    for budget in budgets:
        tag = "-".join(f"{k}{v}" for k, v in budget.items())
        for method in methods:
            for lr in lrs:
                for seed in seeds:
                    plan.append((tag, budget, method, lr, seed, out / tag / _run_name(method, lr, seed, lrs)))
    for i, (tag, budget, method, lr, seed, job_dir) in enumerate(plan, 1):
        cfg = QTConfig(**{**qt, **budget, "seed": seed, "generator": "qnn" if method == "small-classical" else method})
        kwargs = dict(dataset=dataset, data_dir=data_dir, qt=cfg, train=TrainConfig(**{**train, "lr": lr}, seed=seed),
                      resume=True, skip_finished=True, val_fraction=0.1 if len(lrs) > 1 else None,
                      label=f"[{i}/{len(plan)}] {tag} {method} lr {lr:g} seed {seed}", progress=progress,
                      log=log, **(limits or {}))
        if method == "small-classical":
            from .model import QuantumTrain
            from .models import build_model

            budget_n = QuantumTrain(build_model(model), cfg).n_trainable
            width, _ = widest_within(model, budget_n)
            run_job_or_skip(job_dir, model=model, width=width, runs=("classical",), **kwargs)
        else:
            run_job_or_skip(job_dir, model=model, runs=("qt",), **kwargs)
    return summarize_compare(out, budgets, methods, seeds, lrs)


def _run_name(method: str, lr: float, seed: int, lrs: list[float]) -> str:
    return f"{method}-seed{seed}" if len(lrs) == 1 else f"{method}-lr{lr:g}-seed{seed}"


def summarize_compare(out: Path, budgets: list[dict], methods: tuple[str, ...], seeds: list[int],
                      lrs: list[float]) -> dict:
    """Write ``results.md``/``results.json`` and ``accuracy_vs_trainable.png`` from finished
    runs; with several ``lrs``, each method's rate is the one with the best mean validation
    accuracy."""
    records = []
    table = ["| budget (QT's count) | method | trainable | lr | seeds | test acc % | gap (test CE − train CE) | train time s |",
             "|---|---|---|---|---|---|---|---|"]
    for budget in budgets:
        tag = "-".join(f"{k}{v}" for k, v in budget.items())
        target = _qt_count(out / tag, seeds, lrs)
        for method in methods:
            by_lr = {}
            for lr in lrs:
                runs = []
                for seed in seeds:
                    path = out / tag / _run_name(method, lr, seed, lrs) / "results.json"
                    if path.exists():
                        res = json.loads(path.read_text())
                        runs.append(res["classical"] if method == "small-classical" else res["qt"])
                if runs:
                    by_lr[lr] = runs
            if len(lrs) > 1 and by_lr:  # choose on validation, report test
                lr = max(by_lr, key=lambda k: (_mean_std([r["val_acc"] for r in by_lr[k]])[0], -k))
            else:
                lr = next(iter(by_lr), lrs[0])
            runs = by_lr.get(lr, [])
            acc, gap = [r["test_acc"] for r in runs], [r["gap"] for r in runs]
            trainable = runs[0]["trainable"] if runs else None
            secs = _mean_std([r["train_seconds"] for r in runs])[0]
            table.append(f"| {tag} ({_count(target)}) | {method} | {_count(trainable)} | {lr:g} | {len(runs)} | {_fmt(acc)} | "
                         f"{_fmt(gap, 1.0, 4)} | {'—' if not runs else f'{secs:.0f}'} |")
            m, s = _mean_std(acc)
            records.append({"budget": tag, "target": target, "method": method, "trainable": trainable, "lr": lr, "seeds": len(runs),
                            "test_acc_mean": m, "test_acc_std": s, "gap_mean": _mean_std(gap)[0],
                            "gap_std": _mean_std(gap)[1], "train_seconds_mean": secs})
    write_text_atomic(out / "results.md", "\n".join(table) + "\n")
    write_text_atomic(out / "results.json", json.dumps(records, indent=2) + "\n")
    _plot(out, records, methods)
    return {"table": "\n".join(table), "records": records, "dir": str(out)}


def _qt_count(tag_dir: Path, seeds: list[int], lrs: list[float]) -> int | None:
    """The QNN's trainable count at this budget: the target the baselines are matched to."""
    for lr in lrs:
        for seed in seeds:
            path = tag_dir / _run_name("qnn", lr, seed, lrs) / "results.json"
            if path.exists():
                return json.loads(path.read_text())["qt"]["trainable"]
    return None


def _plot(out: Path, records: list[dict], methods: tuple[str, ...]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    counts = [r["trainable"] for r in records if r["seeds"]]
    log = bool(counts) and max(counts) >= 10 * min(counts)  # within a decade a log axis shows no labels
    for k, method in enumerate(methods):
        # methods with the same count (fixed-random/uniform) would hide each other: nudge each by 0.3%
        pts = sorted((r["trainable"] * (1 + 0.003 * (k - len(methods) / 2)), r["test_acc_mean"] * 100,
                      r["test_acc_std"] * 100) for r in records if r["method"] == method and r["seeds"])
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method, lw=2.5 if method == "qnn" else 1.2)
    ax.set(xscale="log" if log else "linear", xlabel="trainable parameters",
           ylabel="test accuracy (%) — mean ± std over seeds", title="QT vs classical controls at matched budgets")
    if log:
        _plain_log_ticks(ax, matplotlib)
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_trainable.png", dpi=120)
    plt.close(fig)
