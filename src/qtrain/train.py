"""One short training loop for QT models and their classical twins.

``fit`` reads top to bottom: per epoch, shuffle with a seeded generator, step through
mini-batches, then evaluate train and test sets in eval mode (one weight generation
per pass for a QuantumTrain) and record the generalization gap, test CE - train CE.
The optimiser is the papers' Adam (weight decay 1e-5, eps 1e-6) with
ReduceLROnPlateau(factor 0.5, patience 5) on the epoch's mean training loss.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset
from .model import QuantumTrain

__all__ = ["TrainConfig", "evaluate", "fit"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (the papers' optimiser; lr and length are ours to choose).

    Args:
        epochs: passes over the training set.
        batch_size: mini-batch size (one circuit evaluation per batch).
        lr: Adam learning rate (the papers use 1e-4 over 50 epochs).
        weight_decay, eps: Adam's, as in the papers.
        plateau_factor, plateau_patience: ReduceLROnPlateau on the epoch training loss.
        seed: seeds the data order.
        device: where to train.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    eps: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number, got {self.lr!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct = 0.0, 0
    ctx = model.cached_weights() if isinstance(model, QuantumTrain) else nullcontext()
    with ctx:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits = model(xb)
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return total_loss / len(y), correct / len(y)


def final_metrics(model: nn.Module, data: Dataset) -> dict:
    """Train and test loss/accuracy and the gap, both sets scored with *one* weight
    generation (with shots, every generation is a different sample)."""
    ctx = model.cached_weights() if isinstance(model, QuantumTrain) else nullcontext()
    with torch.no_grad(), ctx:
        train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        val = {} if data.y_val is None else dict(zip(("val_loss", "val_acc"), evaluate(model, data.x_val, data.y_val)))
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "gap": test_loss - train_loss, **val}


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    settings: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[dict]:
    """Train ``model`` (a :class:`~qtrain.QuantumTrain` or any classifier) on ``data``.

    Args:
        model: returns logits ``(B, n_classes)``.
        data: from :func:`qtrain.data.load_dataset`.
        config: the hyper-parameters.
        checkpoint: a file to write after every epoch (atomically; model, optimizer,
            scheduler, data order and RNG states, metrics so far).
        resume: continue from ``checkpoint`` if it exists. The result equals an
            uninterrupted run's exactly. ``config.epochs`` may be raised to extend a run.
        settings: what identifies the run (default: ``config`` without ``epochs``); a
            checkpoint written with other settings is refused.
        on_epoch: called with each epoch's metrics as soon as it ends.
        progress: show a progress bar per epoch (when tqdm is installed).
        desc: the progress bar's label.

    Returns:
        One dict per epoch: ``epoch, train_loss, train_acc, test_loss, test_acc, gap, lr,
        seconds``.
    """
    device = torch.device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, eps=config.eps)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=config.plateau_factor, patience=config.plateau_patience
    )
    order_rng = torch.Generator().manual_seed(config.seed)
    if settings is None:
        settings = {k: v for k, v in config.to_dict().items() if k != "epochs"}
    state = dict(model=model, optimizer=opt, scheduler=sched, generators={"data_order": order_rng})
    n = len(data.y_train)
    history: list[dict] = []
    start = 1
    if resume and checkpoint is not None and Path(checkpoint).exists():
        done, history = load_checkpoint(checkpoint, settings=settings, **state)
        start = done + 1
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=order_rng)
        batches = range(0, n, config.batch_size)
        bar = _progress(batches, progress, f"{desc} epoch {epoch}/{config.epochs}")
        running = torch.zeros((), device=device)  # summed on device: no per-step host sync
        for i in bar:
            idx = order[i : i + config.batch_size]
            xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach() * len(idx)
        sched.step(float(running) / n)
        record = {"epoch": epoch, **final_metrics(model, data)}
        record.update({
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        })
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch=epoch, history=history, settings=settings, **state)
        if on_epoch is not None:
            on_epoch(record)
    return history


def _progress(iterable, enabled: bool, desc: str):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return iterable
