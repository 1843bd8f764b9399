"""The ``qtrain`` command line.

    qtrain train                         # paper CNN on the offline MNIST subset, QT vs classical
    qtrain train --dataset iris --model iris-mlp --depth 4 --epochs 30
    qtrain info --model paper-cnn --depth 16 --mapping paper
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .circuits import ANSATZE
from .config import MAPPINGS, QTConfig
from .data import DATASETS, DatasetUnavailable, load_dataset
from .model import QuantumTrain, estimate_memory
from .models import MODELS, build_model
from .resources import format_bytes
from .train import TrainConfig, fit

DEFAULT_OUT = "runs/qtrain-train"


def _qt_config(args: argparse.Namespace) -> QTConfig:
    return QTConfig(depth=args.depth, ansatz=args.ansatz, mapping=args.mapping, seed=args.seed, device=args.device)


def _add_qt_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="paper-cnn", choices=sorted(MODELS), help="target model (default: paper-cnn)")
    p.add_argument("--ansatz", default="u3-cu3-ring", choices=sorted(ANSATZE), help="circuit family")
    p.add_argument("--depth", type=int, default=16, help="ansatz blocks L (default: 16)")
    p.add_argument("--mapping", default="mlp", choices=MAPPINGS, help="'mlp' (default) or 'paper' (reference preset)")
    p.add_argument("--seed", type=int, default=0, help="seeds model init, QT init and data order (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])


def _plot(histories: dict[str, list[dict]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        ax_acc.plot(ep, [100 * h["test_acc"] for h in hist], marker="o", label=f"{name} test")
        ax_acc.plot(ep, [100 * h["train_acc"] for h in hist], ls="--", alpha=0.6, label=f"{name} train")
        ax_loss.plot(ep, [h["test_loss"] for h in hist], marker="o", label=f"{name} test CE")
        ax_loss.plot(ep, [h["train_loss"] for h in hist], ls="--", alpha=0.6, label=f"{name} train CE")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def cmd_train(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, seed=args.seed)
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device
    )
    torch.manual_seed(args.seed)
    qt = QuantumTrain(build_model(args.model), _qt_config(args))
    (out / "config.json").write_text(
        json.dumps(
            {
                "qtrain_version": __version__,
                "command": "train",
                "model": args.model,
                "qt": qt.config.to_dict(),
                "train": train_cfg.to_dict(),
                "data": data.describe(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"qtrain {__version__}: {args.model} on {data.name} ({data.source}), {len(data.y_train):,} train / "
          f"{len(data.y_test):,} test", file=sys.stderr)
    qt.print_trainable_parameters()
    metrics = (out / "metrics.jsonl").open("w")

    def log(run: str):
        def write(record: dict) -> None:
            metrics.write(json.dumps({"run": run, **record}) + "\n")
            metrics.flush()
            print(f"  [{run}] epoch {record['epoch']}: train {100 * record['train_acc']:.2f}% "
                  f"test {100 * record['test_acc']:.2f}% gap {record['gap']:+.4f}", file=sys.stderr)

        return write

    histories, seconds, trainable = {}, {}, {}
    t0 = time.perf_counter()
    histories["QT"] = fit(qt, data, train_cfg, on_epoch=log("qt"), progress=not args.no_progress, desc="QT")
    seconds["QT"], trainable["QT"] = time.perf_counter() - t0, qt.n_trainable
    plain = qt.merge_and_unload()
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(out / "model.safetensors"))
    qt.save_pretrained(out / "qt")
    if not args.no_classical:
        torch.manual_seed(args.seed)
        classical = build_model(args.model)
        t0 = time.perf_counter()
        histories["classical"] = fit(
            classical, data, train_cfg, on_epoch=log("classical"), progress=not args.no_progress, desc="classical"
        )
        seconds["classical"] = time.perf_counter() - t0
        trainable["classical"] = sum(p.numel() for p in classical.parameters() if p.requires_grad)
        save_file({k: v.contiguous() for k, v in classical.state_dict().items()}, str(out / "classical.safetensors"))
    metrics.close()

    rows = [("run", "trainable", "train acc %", "test acc %", "gap (CE)", "time s")]
    results = {}
    for name, hist in histories.items():
        last = hist[-1]
        rows.append((name, f"{trainable[name]:,}", f"{100 * last['train_acc']:.2f}", f"{100 * last['test_acc']:.2f}",
                     f"{last['gap']:+.4f}", f"{seconds[name]:.1f}"))
        results[name] = {**last, "trainable": trainable[name], "train_seconds": seconds[name]}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plotted = _plot(histories, out / "curves.png")
    print()
    print(f"{args.model} on {data.name}, {args.epochs} epochs, seed {args.seed} "
          f"(M = {qt.n_generated:,} weights, N = {qt.n_qubits} qubits, depth {args.depth}, {args.mapping} mapping)")
    print(_table(rows))
    print(f"\nwrote {out}/: config.json, metrics.jsonl, results.json, model.safetensors (the QT-trained plain model), "
          f"qt/ (QT checkpoint){', classical.safetensors' if 'classical' in histories else ''}"
          f"{', curves.png' if plotted else ' (install matplotlib for curves.png)'}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    cfg = _qt_config(args)
    qt = QuantumTrain(build_model(args.model), cfg)
    c = qt.trainable_parameter_counts()
    rows = [
        ("model", args.model),
        ("generated weights M", f"{c['generated']:,}"),
        ("qubits N", str(c["n_qubits"])),
        ("QNN angles", f"{c['qnn']:,}"),
        ("mapping", f"{c['mapping']:,}"),
        ("trainable", f"{c['trainable']:,}"),
        ("compression M / trainable", f"{c['generated'] / c['trainable']:.2f}"),
        ("memory estimate (fwd+bwd)", format_bytes(estimate_memory(cfg, c["generated"], c["n_qubits"]))),
    ]
    if args.json:
        print(json.dumps({**c, "model": args.model, "memory_bytes": estimate_memory(cfg, c["generated"])}))
    else:
        print(_table([("quantity", "value"), *rows]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtrain", description="Quantum-Train: train any PyTorch model through a QNN.")
    parser.add_argument("--version", action="version", version=f"qtrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train QT and the classical model on a dataset, write results",
                       description="Train a model through QT, and the same model classically for the same epochs. "
                       "With no arguments: the paper CNN on the offline 5,000-image MNIST subset.")
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="dataset (default: mnist subset)")
    _add_qt_flags(p)
    p.add_argument("--epochs", type=int, default=10, help="epochs for both runs (default: 10)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3; the papers: 1e-4)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("info", help="counts and memory estimate of a model/config")
    _add_qt_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatasetUnavailable as e:
        print(f"qtrain: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, MemoryError) as e:
        print(f"qtrain: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
