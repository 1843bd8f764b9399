"""The ``qtrain`` command line.

    qtrain train                         # paper CNN on the offline MNIST subset, QT vs classical
    qtrain train --dataset iris --model iris-mlp --depth 4 --epochs 30 --out runs/iris
    qtrain train --dataset iris --model iris-mlp --depth 4 --epochs 30 --out runs/iris --resume
    qtrain train --nproc 2 --out runs/ddp  # data-parallel: torchrun, 2 processes (gloo on CPU)
    qtrain export runs/iris              # runs/iris/export/model.safetensors and model.onnx
    qtrain reproduce mnist-depth --seeds 0 1 2   # the papers' depth study; rerun to continue
    qtrain info --model paper-cnn --depth 16 --mapping paper
    qtrain info --model iris-mlp --depth 2 --ansatz ry-cnot-ring --draw   # and the circuit
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from . import __version__, distributed
from .circuits import ANSATZE, QNN
from .circuits.qnn import simulation_method
from .config import CENTERINGS, GENERATORS, MAPPINGS, QTConfig
from .checkpoint import CheckpointError, read_checkpoint_meta
from .data import DATASETS, DatasetUnavailable
from .experiment import JobLocked, _save_plain, run_job
from .export import export_onnx
from .model import QuantumTrain, estimate_memory
from .models import MODELS, build_model
from .compare import METHODS, parse_budget, run_compare
from .reproduce import EXPERIMENTS, run_experiment, run_shots_study
from .resources import format_bytes
from .train import TrainConfig


_CENTERING_HELP = ("mean-centring of the mapping output: 'tensor' (each tensor on its own), 'global' (over all M, "
                   "the papers'); default 'auto': global for --mapping paper, tensor otherwise")


def _qt_config(args: argparse.Namespace) -> QTConfig:
    return QTConfig(depth=args.depth, ansatz=args.ansatz, mapping=args.mapping, seed=args.seed, device=args.device,
                    generator=args.generator, chunk_size=args.chunk_size, centering=args.centering)


def _add_qt_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="paper-cnn", choices=sorted(MODELS), help="target model (default: paper-cnn)")
    p.add_argument("--ansatz", default="u3-cu3-ring", choices=sorted(ANSATZE), help="circuit family")
    p.add_argument("--depth", type=int, default=16, help="ansatz blocks L (default: 16)")
    p.add_argument("--mapping", default="mlp", choices=MAPPINGS, help="'mlp' (default), 'paper' (reference preset) or 'mps' (tensor network)")
    p.add_argument("--generator", default="qnn", choices=GENERATORS,
                   help="'qnn' (default) or a classical baseline at the same trainable budget")
    p.add_argument("--chunk-size", type=int, default=1,
                   help="weights per basis state C (default 1); N = ceil(log2(ceil(M / C)))")
    p.add_argument("--centering", default="auto", choices=CENTERINGS, help=_CENTERING_HELP)
    p.add_argument("--seed", type=int, default=0, help="seeds model init, QT init and data order (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc is not None and args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    distributed.resolve_backend(args.device, args.backend)  # nccl without CUDA: an error here, not in the workers
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out DIR, the directory of the run to continue")
    if args.nproc is not None and args.nproc > 1:
        return _launch_train(args)
    distributed.setup(args.device, args.backend)  # a torchrun worker joins its process group; else nothing
    main = distributed.is_main_process()
    # every rank must use rank 0's directory (a default name follows the clock)
    out = Path(distributed.broadcast_object(args.out or time.strftime("runs/train-%Y%m%d-%H%M%S")))
    log = _err if main else None
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            device=args.device)
    qt_cfg = _qt_config(args)
    world = distributed.get_world_size()
    if main:
        _err(f"qtrain {__version__}: {args.model} on {args.dataset}, {'resuming' if args.resume else 'writing'} {out}/"
             + (f", {world} processes ({distributed.resolve_backend(args.device, args.backend)})" if world > 1 else ""))
    args.resume_hint = f"the same command plus --resume --out {out}"
    results = run_job(out, dataset=args.dataset, data_dir=args.data_dir, model=args.model, qt=qt_cfg,
                      train=train_cfg, runs=("qt",) if args.no_classical else ("qt", "classical"),
                      resume=args.resume, progress=not args.no_progress and main, log=log)
    if not main:
        return 0
    rows = [("run", "trainable", "epochs", "train acc %", "test acc %", "gap (CE)", "train time s")]
    names = {"qt": "QT", "classical": "classical", "classical_1_epoch": "classical, 1 epoch (papers' baseline)"}
    for key, r in results.items():
        rows.append((names[key], f"{r['trainable']:,}", str(r["epochs"]), f"{100 * r['train_acc']:.2f}",
                     f"{100 * r['test_acc']:.2f}", f"{r['gap']:+.4f}", f"{r['train_seconds']:.1f}"))
    q = results["qt"]
    print(f"\n{args.model} on {args.dataset}, seed {args.seed}: M = {q['n_generated']:,} weights from N = "
          f"{q['n_qubits']} qubits, {args.ansatz} depth {args.depth}, {args.mapping} mapping")
    print(_table(rows))
    print(f"\nwrote {out}/: model.safetensors (the QT-trained plain model), qt/ (QT checkpoint), metrics.jsonl, "
          f"results.json, config.json, curves.png, checkpoints")
    return 0


def _launch_train(args: argparse.Namespace) -> int:
    """``qtrain train --nproc K``: the same command in K torchrun workers on this machine."""
    out = Path(args.out or time.strftime("runs/train-%Y%m%d-%H%M%S"))
    TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    _qt_config(args)  # bad settings: one error line here rather than one per worker
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None and args.nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {args.nproc} with --device cuda puts one process on each GPU, but this machine has "
                         f"{torch.cuda.device_count()}")
    if (out / "config.json").exists() and not args.resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    args.resume_hint = f"the same command plus --resume --out {out}"
    args.out = str(out)
    _err(f"qtrain: launching {args.nproc} processes with torchrun (python -m torch.distributed.run)")
    return distributed.launch(["-m", "qtrain.cli", *_worker_argv(args)], args.nproc)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``train`` command line a worker runs: every option spelled out in full from the
    parsed values, without ``--nproc``. Rebuilt rather than copied because torchrun parses
    the options it recognises anywhere on its command line, abbreviations included
    (``--nproc`` would be taken for its ``--nproc-per-node``)."""
    argv = ["train"]
    for action in args.subparser._actions:
        if not action.option_strings or action.dest in ("help", "nproc"):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[-1]
        if action.nargs == 0:  # store_true
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]  # str(float) round-trips exactly
    return argv


def _report(summary: dict, files: str) -> int:
    print(f"\n{summary['table']}\n\nwrote {summary['dir']}/: {files} and one directory per run")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.experiment == "shots":
        summary = run_shots_study(seeds=args.seeds, out=args.out, quick=args.quick, progress=not args.no_progress,
                                  log=_err)
        return _report(summary, "results.md, results.json, shots.png")
    summary = run_experiment(args.experiment, seeds=args.seeds, out=args.out, quick=args.quick,
                             data_dir=args.data_dir, progress=not args.no_progress, log=_err)
    return _report(summary, "results.md, results.csv, results.json, summary.png, loss_curves.png")


def cmd_compare(args: argparse.Namespace) -> int:
    budgets = [parse_budget(b) for b in args.budget_from]
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device}
    qt = {"ansatz": args.ansatz, "mapping": args.mapping, "device": args.device, "centering": args.centering}
    limits = {"limit_train": 512, "limit_test": 256} if args.quick else None
    summary = run_compare(dataset=args.dataset, model=args.model, budgets=budgets, seeds=args.seeds, train=train,
                          qt=qt, lrs=args.lrs, methods=tuple(args.methods), out=args.out, data_dir=args.data_dir, limits=limits,
                          progress=not args.no_progress, log=_err)
    return _report(summary, "results.md, results.json, accuracy_vs_trainable.png")


def cmd_export(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    run = Path(args.run)
    try:
        saved = json.loads((run / "config.json").read_text())
        job = saved["job"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{run} is not a `qtrain train` output directory (config.json: {e})") from None
    plain = build_model(job["model"], job.get("width", 1.0))
    if (run / "model.safetensors").is_file():  # the finished run's model: exactly what was reported
        plain.load_state_dict(load_file(str(run / "model.safetensors")))
        source = "model.safetensors"
    elif (run / "checkpoint-qt.safetensors").is_file():  # an unfinished run: its last epoch
        meta = read_checkpoint_meta(run / "checkpoint-qt.safetensors")
        qt = QuantumTrain(plain, QTConfig.from_saved(job["qt"]))
        state = load_file(str(run / "checkpoint-qt.safetensors"))
        qt.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        plain = qt.merge_and_unload()
        source = f"checkpoint-qt.safetensors (epoch {meta['epoch']})"
    else:
        raise FileNotFoundError(f"{run} has neither model.safetensors nor checkpoint-qt.safetensors")
    plain.eval()
    out = Path(args.out or run / "export")
    out.mkdir(parents=True, exist_ok=True)
    _save_plain(plain, out / "model.safetensors")
    written = ["model.safetensors"]
    if not args.no_onnx:
        export_onnx(plain, torch.zeros(1, *saved["data"]["input_shape"]), out / "model.onnx")
        written.append("model.onnx")
    print(f"wrote {out}/: {', '.join(written)} ({job['model']}, from {source})")
    return 0


_SIMULATORS = {
    "kernel": "compiled CPU kernel (qtrain.circuits.kernel)",
    "adjoint": "PyTorch: fused gate blocks, hand-written backward",
    "autograd": "PyTorch: autograd reference",
}


def _simulator(qt: QuantumTrain) -> str | None:
    """What runs the circuit (a key of ``_SIMULATORS``), or None when the source is no QNN."""
    qnn = getattr(getattr(qt, "generator", None), "source", None)
    if not isinstance(qnn, QNN):
        return None
    return simulation_method(qnn._ops, qnn.n_qubits, qnn.weights.dtype, qnn.weights.device, qnn.method)


def cmd_info(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    cfg = _qt_config(args)
    qt = QuantumTrain(build_model(args.model), cfg)
    c = qt.trainable_parameter_counts()
    rows = [
        ("model", args.model),
        ("generated weights M", f"{c['generated']:,}"),
        ("qubits N", str(c["n_qubits"])),
        ("chunk size C (weights per basis state)", f"{c['chunk_size']:,}"),
        ("QNN angles" if cfg.generator == "qnn" else f"{cfg.generator} parameters", f"{c['qnn']:,}"),
        ("mapping", f"{c['mapping']:,}"),
        ("trainable", f"{c['trainable']:,}"),
        ("compression M / trainable", f"{c['generated'] / c['trainable']:.2f}"),
        ("memory estimate (fwd+bwd)", format_bytes(estimate_memory(cfg, c["generated"], c["n_qubits"]))),
    ]
    simulator = _simulator(qt)
    if simulator is not None:
        rows.append(("circuit simulator", _SIMULATORS[simulator]))
    drawing = _info_drawing(qt, args.draw) if getattr(args, "draw", None) is not None else None
    if args.json:
        extra = {"drawing": drawing} if drawing is not None else {}
        extra = {**extra, **({"simulator": simulator} if simulator is not None else {})}
        print(json.dumps({**c, "model": args.model, "memory_bytes": estimate_memory(cfg, c["generated"]), **extra}))
    else:
        print(_table([("quantity", "value"), *rows]))
        if drawing is not None:
            print(f"\n{drawing}")
    return 0


def _info_drawing(qt: QuantumTrain, path: str) -> str:
    """`qtrain info --draw [PATH]`: the circuit as text (wrapped to the terminal); PATH gets a figure."""
    qnn = qt.qnn
    if qnn is None:
        return f"(no circuit: the {qt.config.generator!r} generator has none)"
    parts = list(getattr(qnn, "parts", [qnn]))  # a distributed ansatz draws each sub-circuit
    width = max(40, shutil.get_terminal_size().columns)
    texts = []
    for k, part in enumerate(parts):
        target = None
        if path:
            target = path if len(parts) == 1 else str(Path(path).with_stem(f"{Path(path).stem}-{k}"))
        head = f"sub-circuit {k} ({part.n_qubits} qubits):\n" if len(parts) > 1 else ""
        texts.append(head + part.draw(target, max_width=width))
    if path:
        texts.append(f"wrote {path}" if len(parts) == 1 else f"wrote {len(parts)} figures next to {path}")
    return "\n\n".join(texts)


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
    p.add_argument("--data-dir", metavar="DIR", help="dataset files (full MNIST IDX, FashionMNIST IDX, CIFAR-10 batches)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/train-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-classical", action="store_true", help="skip the classical baseline")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=int, metavar="K",
                   help="data-parallel: launch K processes on this machine with torchrun (DDP; --batch-size is the "
                   "global batch). Across nodes, start `torchrun ... -m qtrain.cli train` yourself: see "
                   "docs/distributed.md")
    p.add_argument("--backend", choices=distributed.BACKENDS,
                   help="process-group backend under torchrun (default: gloo on CPU, nccl on CUDA)")
    p.set_defaults(func=cmd_train, subparser=p)

    p = sub.add_parser("reproduce", help="the papers' experiments as presets (resumable; tables and plots)",
                       description="Run a preset seed by seed. Rerunning the same command continues unfinished runs "
                       "from their checkpoints and skips finished ones. " + " ".join(
                           f"{e.name}: {e.model} on {e.dataset}, L in {list(e.depths)}." for e in EXPERIMENTS.values()))
    p.add_argument("experiment", choices=[*sorted(EXPERIMENTS), "shots"],
                   help="which preset ('shots': accuracy vs measurement shots on iris and digits)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 epoch, 2 depths, a data subset")
    p.add_argument("--out", default="runs/reproduce", metavar="DIR", help="parent directory (default: runs/reproduce)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset files (CIFAR-10 batches, full MNIST IDX)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("compare", help="QT vs classical controls at the same trainable budget",
                       description="Train QT and matched-budget baselines (fixed-random, uniform, no-entanglement, "
                       "tensor-train, low-rank, subspace, small-classical) with the same data, epochs and optimiser. "
                       "Rerunning the same command continues unfinished runs.")
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="dataset (default: mnist subset)")
    p.add_argument("--model", default="paper-cnn", choices=sorted(MODELS), help="target model (default: paper-cnn)")
    p.add_argument("--budget-from", nargs="+", default=["depth=16"], metavar="K=V[,K=V]",
                   help="QT settings that fix each budget, e.g. depth=4 depth=16 (default: depth=16)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods (default: all)")
    p.add_argument("--ansatz", default="u3-cu3-ring", choices=sorted(ANSATZE), help="circuit family")
    p.add_argument("--mapping", default="mlp", choices=MAPPINGS, help="mapping for QT and the baselines")
    p.add_argument("--centering", default="auto", choices=CENTERINGS, help=_CENTERING_HELP)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--epochs", type=int, default=10, help="epochs for every run (default: 10)")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default: 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate for every run (default: 1e-3)")
    p.add_argument("--lrs", type=float, nargs="+", metavar="LR",
                   help="learning-rate search, the same for every method: each keeps the rate with the best "
                   "validation accuracy (10%% of the training set held out); test accuracy is reported at it")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quick", action="store_true", help="a smoke test on a 512/256 data subset")
    p.add_argument("--out", default="runs/compare", metavar="DIR", help="output directory (default: runs/compare)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="a `qtrain train` run to the plain model (safetensors) and ONNX")
    p.add_argument("run", help="the run directory written by `qtrain train`")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RUN/export)")
    p.add_argument("--no-onnx", action="store_true", help="only the safetensors file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="counts and memory estimate of a model/config")
    _add_qt_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--draw", nargs="?", const="", metavar="PATH",
                   help="also draw the circuit as text; with PATH, write a matplotlib figure there too")
    p.set_defaults(func=cmd_info)
    return parser


def _warn_if_busy() -> None:
    """Several torch threads on cores that other processes keep busy wait for each other at
    every small operation: a QT step of the main job took 2.7 s instead of 15 ms that way."""
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return
    if threads > 1 and load > cores - 0.5:
        _err(f"qtrain: note: this machine is busy (load {load:.1f} on {cores} cores) and torch uses {threads} threads; "
             "small QT steps can then run many times slower. OMP_NUM_THREADS=1 avoids that.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command != "train" and distributed.launched_by_torchrun() and os.environ.get("WORLD_SIZE", "1") != "1":
            # the other commands would write the same files from every process
            raise ValueError(f"only `qtrain train` runs data-parallel; run `qtrain {args.command}` without torchrun")
        if args.command in ("train", "reproduce", "compare") and not distributed.launched_by_torchrun():
            _warn_if_busy()
        return args.func(args)
    except BrokenPipeError:  # `qtrain info | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", "the same command again")
        print(f"\nqtrain: interrupted; the last finished epoch is checkpointed: continue with {hint}", file=sys.stderr)
        return 130
    except DatasetUnavailable as e:
        print(f"qtrain: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, MemoryError, FileExistsError, FileNotFoundError, CheckpointError, JobLocked) as e:
        print(f"qtrain: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
