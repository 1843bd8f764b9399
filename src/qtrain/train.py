"""One short training loop for QT models and their classical twins.

``fit`` reads top to bottom: per epoch, shuffle with a seeded generator, step through
mini-batches, then evaluate train and test sets in eval mode (one weight generation
per pass for a QuantumTrain) and record the generalization gap, test CE - train CE.
The optimiser is the papers' Adam (weight decay 1e-5, eps 1e-6) with
ReduceLROnPlateau(factor 0.5, patience 5) on the epoch's mean training loss.

Under ``torchrun`` the same loop is data-parallel (see ``docs/distributed.md``): every
rank draws the same seeded permutation, takes its shard of each *global* mini-batch,
evaluates the circuit once per step and lets DDP average the gradients, so the run
follows the single-process one with the same ``batch_size`` (up to float summation
order). Rank 0 alone writes checkpoints and calls ``on_epoch``.
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
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset
from .model import QuantumTrain
from .resources import available_bytes

__all__ = ["TrainConfig", "evaluate", "fit", "train_step"]


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
        device: where to train; under torchrun a bare ``"cuda"`` means each rank's own GPU.
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
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024, *, shard: bool = False
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode.

    With ``shard`` (a collective: every rank must call it) each rank scores every
    ``world``-th example and the sums are all-reduced: every rank returns the metrics of
    the whole set. Every rank generates the weights once, as a single process would,
    which keeps a shots sampler's stream the same on all ranks.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = len(y)
    if shard:
        x, y = distributed.shard(x), distributed.shard(y)
    total_loss, correct = 0.0, 0
    ctx = model.cached_weights() if isinstance(model, QuantumTrain) else nullcontext()
    with ctx:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits = model(xb)
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    if shard and distributed.get_world_size() > 1:
        sums = torch.tensor([total_loss, correct], dtype=torch.float64, device=device)
        dist.all_reduce(sums)
        total_loss, correct = float(sums[0]), int(sums[1])
    return total_loss / total, correct / total


def final_metrics(model: nn.Module, data: Dataset, *, shard: bool = False) -> dict:
    """Train and test loss/accuracy and the gap, both sets scored with *one* weight
    generation (with shots, every generation is a different sample). ``shard``: split the
    scoring across the ranks of a process group (see :func:`evaluate`)."""
    ctx = model.cached_weights() if isinstance(model, QuantumTrain) else nullcontext()
    with torch.no_grad(), ctx:
        train_loss, train_acc = evaluate(model, data.x_train, data.y_train, shard=shard)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test, shard=shard)
        val = {} if data.y_val is None else dict(zip(("val_loss", "val_acc"),
                                                     evaluate(model, data.x_val, data.y_val, shard=shard)))
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

    The epoch's loss is summed on the device and read once per epoch; on a GPU the
    training set is copied there once (unless it would take more than half the free
    memory), so a training step never waits for the GPU.

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
        on_epoch: called with each epoch's metrics as soon as it ends (on rank 0 only).
        progress: show a progress bar per epoch (when tqdm is installed; rank 0 only).
        desc: the progress bar's label.

    Under ``torchrun`` (or in an initialised process group of more than one process) the
    run is data-parallel: the process group is joined if needed (gloo on CPU, nccl on
    CUDA), ``model`` is wrapped in DDP, each rank trains on its shard of every global
    batch of ``config.batch_size`` examples, and only rank 0 writes ``checkpoint``. All
    ranks must call ``fit`` with the same arguments; ``checkpoint`` must be readable by
    every rank to resume (a shared filesystem). A checkpoint does not depend on the
    number of processes: a run may be resumed with another.

    Returns:
        One dict per epoch: ``epoch, train_loss, train_acc, test_loss, test_acc, gap, lr,
        seconds`` (the same on every rank).
    """
    device = distributed.setup(config.device)  # joins torchrun's process group, if launched by it
    rank, world = distributed.get_rank(), distributed.get_world_size()
    main = rank == 0
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
    # rank 0 decides, so that no rank resumes while another starts afresh
    if resume and checkpoint is not None and distributed.broadcast_object(Path(checkpoint).exists()):
        done, history = load_checkpoint(checkpoint, settings=settings, **state)
        start = done + 1
    # DDP after the checkpoint is loaded: its constructor broadcasts rank 0's parameters
    net = distributed.data_parallel(model, device) if world > 1 else model
    x_train, y_train = _on_device(data.x_train, data.y_train, device)
    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        if world > 1:
            # Each rank's own stream for in-model randomness (dropout), fixed by (seed, epoch,
            # rank): distinct across ranks, and the same after a resume.
            torch.manual_seed(distributed.rank_seed(config.seed, epoch, rank))
        net.train()
        order = torch.randperm(n, generator=order_rng).to(device)  # the same on every rank: same seed, same draws
        batches = range(0, n, config.batch_size)
        bar = _progress(batches, progress and main, f"{desc} epoch {epoch}/{config.epochs}")
        running = torch.zeros((), device=device)  # summed on device: no per-step host sync
        for i in bar:
            running += train_step(net, opt, x_train, y_train, order[i : i + config.batch_size], device)
        if world > 1:
            dist.all_reduce(running)  # the global epoch loss, the same on every rank
            distributed.sync_buffers(model)  # rank 0's buffers: what the checkpoint holds
        sched.step(float(running) / n)
        record = {"epoch": epoch, **final_metrics(model, data, shard=world > 1)}
        record.update({
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        })
        history.append(record)
        if checkpoint is not None and main:
            save_checkpoint(checkpoint, epoch=epoch, history=history, settings=settings, **state)
        if on_epoch is not None and main:
            on_epoch(record)
    return history


def _on_device(x: Tensor, y: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """The training set on ``device`` once, so that batches are gathered there: a
    host-to-device copy per step (from pageable memory) makes every step wait for the GPU.
    Kept on the host (copied per batch) when it would take more than half the device's
    free memory."""
    if device.type == "cpu":
        return x, y
    free = available_bytes(device)
    if free is not None and (x.nbytes + y.nbytes) * 2 > free:
        return x, y
    return x.to(device), y.to(device)


def train_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, idx: Tensor, device: torch.device
) -> Tensor:
    """One optimiser step on the global mini-batch ``x[idx], y[idx]`` (cross-entropy);
    returns this rank's summed loss, detached (the whole batch's in one process).

    When ``net`` is DDP-wrapped this rank computes only its
    :func:`~qtrain.distributed.shard` of ``idx``; any other ``net`` takes the whole batch.
    """
    is_ddp = isinstance(net, nn.parallel.DistributedDataParallel)
    world = distributed.get_world_size() if is_ddp else 1
    if world == 1:
        xb, yb = x[idx].to(device), y[idx].to(device)
        loss = F.cross_entropy(net(xb), yb)
        summed = loss.detach() * len(idx)
    else:
        local = distributed.shard(idx)
        xb, yb = x[local].to(device), y[local].to(device)
        summed = F.cross_entropy(net(xb), yb, reduction="sum")
        # DDP averages gradients over the ranks; scaled by world / global batch, that
        # average is the gradient of the global batch's mean loss whatever the shard
        # sizes (the last batch's shards may differ by one, or be empty).
        loss = summed * (world / len(idx))
        summed = summed.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return summed


def _progress(iterable, enabled: bool, desc: str):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return iterable
