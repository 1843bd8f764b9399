"""One training job in one directory: QT and (optionally) the classical twin, resumable.

``run_job`` writes, into ``out``:

- ``config.json``: everything that defines the job (checked again on ``resume``);
- ``metrics.jsonl``: one JSON object per epoch and run (``"run": "qt"`` or
  ``"classical"``), appended as each epoch ends and rebuilt from the checkpoints on
  resume, so it never holds an epoch the checkpoint does not;
- ``checkpoint-qt.safetensors`` / ``checkpoint-classical.safetensors``: after every epoch;
- ``model.safetensors``: the QT-trained plain model (load it into the model class with
  ``safetensors.torch.load_file``; no qtrain needed), ``qt/`` (``from_pretrained``),
  ``classical.safetensors``;
- ``results.json`` and ``curves.png`` when the job completes;
- ``.lock``: held (``flock``) while a process trains into ``out``. A second process asked to
  train the same directory gets :class:`JobLocked` instead of corrupting it; the presets skip
  such a job, so the same ``qtrain reproduce`` / ``qtrain compare`` command started twice
  shares the work. The kernel drops the lock when its holder dies, even by SIGKILL.

Under ``torchrun`` every rank runs ``run_job`` with the same arguments; each trains its
shard (see :func:`qtrain.train.fit`) and rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import distributed
from ._io import atomic_write, write_text_atomic
from ._version import __version__
from .checkpoint import CheckpointError, read_checkpoint_meta
from .config import QTConfig
from .data import load_dataset
from .model import QuantumTrain
from .models import build_model, count_parameters
from .train import TrainConfig, final_metrics, fit

__all__ = ["JobLocked", "plot_curves", "run_job", "run_job_or_skip"]

RUNS = ("qt", "classical")


class JobLocked(RuntimeError):
    """Another live process is training into this job directory."""


_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def _job_lock(out: Path):
    # flock, not a marker file: the kernel releases it when the holder exits or is killed,
    # so a crashed run never leaves a stale lock behind. Rank 0 alone writes, so it alone
    # holds the lock; its outcome is every rank's, so that no rank trains a job others skip.
    fd, busy = None, False
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = True
        except OSError as e:  # some network filesystems have no flock: train unlocked, say so
            if e.errno not in _NO_FLOCK:
                os.close(fd)
                raise
            warnings.warn(f"cannot lock {out / '.lock'} ({e.strerror}): nothing stops a second process from "
                          "training into the same directory", stacklevel=3)
    try:
        if distributed.broadcast_object(busy):
            raise JobLocked(f"{out} is being trained by another process (it holds {out / '.lock'}); "
                            "wait for it, or choose another --out")
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _job_config(dataset: str, data_dir: str | None, model: str, width: float, qt: QTConfig, train: TrainConfig,
                runs: tuple[str, ...], limit: tuple[int | None, int | None], val_fraction: float | None) -> dict:
    qt_dict = qt.to_dict()
    qt_dict.pop("qtrain_version")
    job = {"dataset": dataset, "data_dir": data_dir, "model": model, "width": width, "qt": qt_dict,
           "train": train.to_dict(), "runs": list(runs), "limit_train": limit[0], "limit_test": limit[1]}
    if val_fraction is not None:  # only recorded when used, so older run directories still match
        job["val_fraction"] = val_fraction
    return job


def _normalized(job: dict) -> dict:
    """A job as the current qtrain writes it: fields added since it was saved take their
    defaults, so older run directories keep resuming after an upgrade."""
    job = json.loads(json.dumps(job))
    cfg = QTConfig.from_saved(job.get("qt", {}))
    qt = cfg.to_dict()
    qt.pop("qtrain_version")
    qt["centering"] = cfg.resolved_centering  # "auto" and what it resolves to are the same run
    job["qt"] = json.loads(json.dumps(qt))
    job["train"] = TrainConfig(**job.get("train", {})).to_dict()
    job.setdefault("width", 1.0)
    return job


def _identity(job: dict) -> dict:
    """What must match to resume: all but the epoch count (a run may be extended)."""
    ident = _normalized(job)
    ident["train"].pop("epochs")
    return ident


def run_job(
    out: str | os.PathLike,
    *,
    dataset: str = "mnist",
    data_dir: str | None = None,
    model: str = "paper-cnn",
    width: float = 1.0,
    qt: QTConfig | None = None,
    train: TrainConfig | None = None,
    runs: tuple[str, ...] = RUNS,
    limit_train: int | None = None,
    limit_test: int | None = None,
    val_fraction: float | None = None,
    resume: bool = False,
    skip_finished: bool = False,
    label: str | None = None,
    progress: bool = True,
    log=None,
) -> dict:
    """Train QT and/or the classical model into ``out``; returns the results dict.

    The QT results and ``model.safetensors`` come from one final generation: with shots,
    the reported accuracy is exactly that of the saved model.

    Args:
        width: the model family's width multiplier (1 = the model as named).
        runs: ``("qt", "classical")`` (default), or one of them.
        limit_train, limit_test: keep only the first examples of each split (smoke runs).
        val_fraction: hold this fraction of the training set out as a validation split
            (scored every epoch as ``val_loss`` / ``val_acc``, for hyper-parameter choice).
        skip_finished: return the saved results, touching nothing, when ``out`` holds a
            finished job with exactly these settings.
        label: logged (with ``out``) when the job actually trains.

    Raises:
        FileExistsError: ``out`` already holds a job and ``resume`` is False.
        CheckpointError: on ``resume``, the job in ``out`` has other settings, or a
            checkpoint is corrupt.
        JobLocked: another process is training into ``out`` right now.
    """
    qt = qt or QTConfig()
    train = train or TrainConfig()
    distributed.setup(train.device)  # under torchrun: join the process group before touching `out`
    out = Path(out)
    if not runs or any(r not in RUNS for r in runs):
        raise ValueError(f"`runs` must be a non-empty subset of {RUNS}, got {runs!r}")
    job = _job_config(dataset, data_dir, model, width, qt, train, tuple(runs), (limit_train, limit_test), val_fraction)
    if skip_finished and (done := _on_rank0(_finished, out, job)) is not None:
        return done
    with _job_lock(out):
        # again under the lock: another process may have finished it since the first look
        if skip_finished and (done := _on_rank0(_finished, out, job)) is not None:
            return done
        cfg_path = out / "config.json"
        if label is not None and log is not None and distributed.is_main_process():
            log(f"{label} -> {out}")
        if cfg_path.exists():
            if not resume:
                raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
            try:
                saved = json.loads(cfg_path.read_text())["job"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{cfg_path} is damaged: {e}") from None
            if _identity(saved) != _identity(job):
                was, now = _identity(saved), _identity(job)
                hint = ""
                if {**was, "qt": {**was["qt"], "centering": 0}} == {**now, "qt": {**now["qt"], "centering": 0}}:
                    hint = (f"\n  only the centring differs: this run used centering={was['qt']['centering']!r} (runs made "
                            f"before the option existed centred globally); resume it with --centering {was['qt']['centering']}")
                raise CheckpointError(
                    f"{out} holds a run with other settings; resume it with the same flags, or choose another --out.\n"
                    f"  saved: {json.dumps(was, sort_keys=True)}\n  now:   {json.dumps(now, sort_keys=True)}{hint}"
                )
        # every rank has checked the directory before rank 0 writes into it
        distributed.barrier()
        main = distributed.is_main_process()
        data = load_dataset(dataset, seed=train.seed, root=data_dir).subset(limit_train, limit_test)
        if val_fraction is not None:
            data = data.hold_out(val_fraction, seed=train.seed)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(cfg_path, {"qtrain_version": __version__, "job": job, "data": data.describe()})

        # metrics.jsonl holds exactly what the checkpoints hold, then grows epoch by epoch
        ckpt = {r: out / f"checkpoint-{r}.safetensors" for r in runs}
        lines = []
        for r in runs:
            if resume and ckpt[r].exists():
                lines += [{"run": r, **rec} for rec in read_checkpoint_meta(ckpt[r])["history"]]
        metrics_path = out / "metrics.jsonl"
        if main:
            metrics_path.write_text("".join(json.dumps(line) + "\n" for line in lines))

        def on_epoch(run: str):
            def write(record: dict) -> None:
                with metrics_path.open("a") as f:
                    f.write(json.dumps({"run": run, **record}) + "\n")
                if log is not None:
                    log(f"  [{run}] epoch {record['epoch']}/{train.epochs}: train {100 * record['train_acc']:.2f}% "
                        f"test {100 * record['test_acc']:.2f}% gap {record['gap']:+.4f} ({record['seconds']:.1f} s)")
            return write

        histories, results = {}, {}
        if "qt" in runs:
            torch.manual_seed(train.seed)  # the template's initialisation (QT's own is seeded by qt.seed)
            qt_model = QuantumTrain(build_model(model, width), qt)
            histories["qt"] = fit(qt_model, data, train, checkpoint=ckpt["qt"], resume=resume, on_epoch=on_epoch("qt"),
                                  progress=progress, desc="QT")
            with torch.no_grad(), qt_model.cached_weights():  # one generation: reported == saved
                final = final_metrics(qt_model, data, shard=distributed.get_world_size() > 1)
                if main:
                    _save_plain(qt_model.merge_and_unload(), out / "model.safetensors")
            if main:
                qt_model.save_pretrained(out / "qt")
            results["qt"] = {**_summary(histories["qt"], qt_model.n_trainable), **final}
            results["qt"].update(n_generated=qt_model.n_generated, n_qubits=qt_model.n_qubits)
        if "classical" in runs:
            torch.manual_seed(train.seed)
            net = build_model(model, width)
            histories["classical"] = fit(net, data, train, checkpoint=ckpt["classical"], resume=resume,
                                         on_epoch=on_epoch("classical"), progress=progress, desc="classical")
            if main:
                _save_plain(net, out / "classical.safetensors")
            n = count_parameters(net)
            results["classical"] = _summary(histories["classical"], n)
            results["classical_1_epoch"] = _summary(histories["classical"][:1], n)
        if main:
            _write_json(out / "results.json", results)
            plot_curves(histories, out / "curves.png")
        return results


def _on_rank0(fn, *args):
    """``fn(*args)`` decided by rank 0 for every rank (its error raised on every rank)."""
    outcome = None
    if distributed.is_main_process():
        try:
            outcome = ("ok", fn(*args))
        except CheckpointError as e:
            outcome = ("error", str(e))
    kind, value = distributed.broadcast_object(outcome)
    if kind == "error":
        raise CheckpointError(value)
    return value


def _finished(out: Path, job: dict) -> dict | None:
    """The saved results when ``out`` holds a finished job with exactly these settings.
    Results of fewer epochs are not finished: an extension (more ``--epochs``) rewrites
    ``config.json`` when it starts and ``results.json`` only when it ends."""
    cfg_path = out / "config.json"
    if not ((out / "results.json").exists() and cfg_path.exists()):
        return None
    try:
        if _normalized(json.loads(cfg_path.read_text())["job"]) != _normalized(job):
            return None
        results = json.loads((out / "results.json").read_text())
        epochs = job["train"]["epochs"]
        if all(r.get("epochs") == epochs for key, r in results.items() if key in RUNS):
            return results
    except (ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{out}: damaged config.json or results.json ({e})") from None
    return None


def run_job_or_skip(out: str | os.PathLike, *, log=None, label: str | None = None, **kwargs) -> dict | None:
    """:func:`run_job`, except that a job another process is training is skipped (and
    logged) instead of raised: how a preset started twice shares its jobs."""
    try:
        return run_job(out, log=log, label=label, **kwargs)
    except JobLocked:
        if log is not None and distributed.is_main_process():
            log(f"{label or out}: skipped, another process is training {out}")
        return None


def _summary(history: list[dict], trainable: int) -> dict:
    # train_seconds sums the epochs' own times, so it covers resumed runs too
    return {**history[-1], "trainable": trainable, "train_seconds": sum(h["seconds"] for h in history),
            "epochs": len(history)}


def _save_plain(model: torch.nn.Module, path: Path) -> None:
    # clone: safetensors refuses tensors that share memory (tied weights)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def _write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def plot_curves(histories: dict[str, list[dict]], path: Path) -> bool:
    """Accuracy and loss per epoch for each run; False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("qtrain: matplotlib is not installed; no plots (pip install 'qtrain[plot]')", file=sys.stderr)
        return False
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        line, = ax_acc.plot(ep, [100 * h["test_acc"] for h in hist], marker="o", label=f"{name} test")
        ax_acc.plot(ep, [100 * h["train_acc"] for h in hist], ls="--", color=line.get_color(), alpha=0.6,
                    label=f"{name} train")
        ax_loss.plot(ep, [h["test_loss"] for h in hist], marker="o", color=line.get_color(), label=f"{name} test CE")
        ax_loss.plot(ep, [h["train_loss"] for h in hist], ls="--", color=line.get_color(), alpha=0.6,
                     label=f"{name} train CE")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
