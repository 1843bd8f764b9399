"""Data-parallel training on ``torch.distributed``: the few helpers :func:`qtrain.train.fit`
and ``qtrain train --nproc`` share.

Nothing here launches processes or moves gradients by itself: processes come from
torch's own launcher (``torchrun`` / ``python -m torch.distributed.run``), gradients are
averaged by :class:`~torch.nn.parallel.DistributedDataParallel`, and the few other
collectives (the epoch loss, evaluation sums, buffers) are ``torch.distributed`` calls.

Outside a ``torchrun`` process every helper is a no-op for a world of one, so the
single-process trainer runs exactly as it did:

>>> from qtrain import distributed
>>> distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()
(0, 1, True)
>>> distributed.broadcast_object({"out": "runs/a"})  # a world of one: returned as is
{'out': 'runs/a'}
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "BACKENDS",
    "launched_by_torchrun",
    "resolve_backend",
    "setup",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "broadcast_object",
    "barrier",
    "shard",
    "data_parallel",
    "sync_buffers",
    "rank_seed",
    "launch",
]

BACKENDS = ("gloo", "nccl")

# What torchrun (and torch.distributed's env:// rendezvous) puts in each worker's environment.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process is a worker started by ``torchrun`` (its env:// variables are set)."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def resolve_backend(device: str | torch.device = "cpu", backend: str | None = None) -> str:
    """The process-group backend for training on ``device``: ``gloo`` on CPU, ``nccl`` on CUDA
    unless ``backend`` says otherwise.

    Raises:
        ValueError: an unknown backend, or ``nccl`` where it cannot run (no CUDA, or
            CPU training: nccl only moves CUDA tensors).

    >>> resolve_backend("cpu"), resolve_backend("cpu", "gloo")
    ('gloo', 'gloo')
    """
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"invalid device {device!r}: expected e.g. 'cpu', 'cuda', 'cuda:1'") from None
    if backend is None:
        return "nccl" if kind == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"unknown distributed backend {backend!r}; choose one of {BACKENDS}")
    if backend == "nccl":
        if not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()):
            raise ValueError("the nccl backend needs CUDA GPUs and a CUDA build of torch; this machine has none: "
                             "use gloo (the default for CPU training)")
        if kind != "cuda":
            raise ValueError(f"the nccl backend only communicates CUDA tensors, but training runs on {device!r}: "
                             "train on --device cuda, or use gloo")
    return backend


def setup(device: str | torch.device = "cpu", backend: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` describes (once per process) and return the
    device this rank trains on.

    In a ``torchrun`` worker the group is initialised from the environment with
    :func:`resolve_backend`'s choice (unless the caller already did it) and destroyed at
    exit; a bare ``"cuda"`` then means this rank's own GPU, ``cuda:LOCAL_RANK``, which
    also becomes the current CUDA device (so ``QTConfig(device="cuda")`` lands there too).
    An explicit ``cuda:i`` is kept. Outside torchrun this only parses ``device``.
    """
    device = torch.device(device)
    if not (launched_by_torchrun() or _initialized()):
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"this process (LOCAL_RANK {os.environ.get('LOCAL_RANK', 0)}) would train on {device}, but "
                             f"this machine has {torch.cuda.device_count()} GPU(s): start at most one process per GPU")
        torch.cuda.set_device(device)
    if not _initialized():
        dist.init_process_group(resolve_backend(device, backend))
        atexit.register(_destroy)
    return device


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _destroy() -> None:
    if _initialized():
        # Every rank reaches the teardown before any tears down: a rank that destroyed its
        # gloo group while a peer still used it aborted that peer ("terminate called without
        # an active exception", SIGABRT) in about 1 of 6 two-process runs here. Monitored and
        # bounded, so that a peer that died or is stuck elsewhere delays the exit, never hangs it.
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            except Exception:  # noqa: BLE001 - at exit, nothing to do about a broken group
                pass
        dist.destroy_process_group()


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``src``'s ``obj`` on every rank (a decision all ranks must share: an output
    directory named after the clock, whether a checkpoint exists)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op for a world of one)."""
    if get_world_size() > 1:
        dist.barrier()


def shard(indices: Tensor) -> Tensor:
    """This rank's part of a global mini-batch: every ``world``-th index from ``rank``, as
    :class:`~torch.utils.data.DistributedSampler` deals them. Shards differ in size by at
    most one, and a batch smaller than the world leaves some ranks empty; the trainer
    weights each rank's loss so that the averaged gradient is the global batch's.

    >>> shard(torch.arange(5))  # a world of one keeps everything
    tensor([0, 1, 2, 3, 4])
    """
    world = get_world_size()
    return indices if world == 1 else indices[get_rank() :: world]


def _constant_buffers(model: nn.Module) -> list[str]:
    """Buffers DDP need not broadcast every step: a QuantumTrain generator's non-persistent
    ones (the bit features, the tensor sizes), derived from M and N and so equal on every
    rank by construction. The bit table alone is M x N floats; the rest (the shots
    sampler's state, BatchNorm statistics, the fixed gains) stays synchronised from rank 0."""
    from .model import QuantumTrain  # the model module imports the circuits: keep this module light

    if not isinstance(model, QuantumTrain):
        return []
    names = []
    for path, module in model.generator.named_modules(prefix="generator"):
        names += [f"{path}.{b}" for b in module._non_persistent_buffers_set if module._buffers.get(b) is not None]
    return names


def data_parallel(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``model`` (already on ``device``) wrapped in DDP for the current process group.

    Gradients of everything that requires grad (for a QuantumTrain: the QNN angles and the
    mapping; the frozen placeholders of the generated weights are not parameters of it)
    are averaged across ranks after each backward. Buffers are broadcast from rank 0 at
    every forward, as DDP does by default, except :func:`_constant_buffers`.
    """
    ignore = _constant_buffers(model)
    if ignore:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)  # buffers synced per forward: the default


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers to every rank, as DDP does before each forward.

    Called before evaluation: after the last step each rank holds the BatchNorm statistics
    of its own shard (and a rank whose shard was empty may hold NaN), while the checkpoint
    and the exported model carry rank 0's."""
    if get_world_size() == 1:
        return
    ignore = set(_constant_buffers(model))
    for name, buf in model.named_buffers():
        if name not in ignore:
            dist.broadcast(buf, src=0)


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for this rank's global RNG in this epoch (dropout and other in-model
    randomness): distinct per rank, and a function of (seed, epoch, rank) alone, so that a
    resumed run draws what an uninterrupted one would, without saving every rank's state.

    >>> rank_seed(0, 1, 0) != rank_seed(0, 1, 1), rank_seed(3, 2, 1) == rank_seed(3, 2, 1)
    (True, True)
    """
    digest = hashlib.blake2b(f"qtrain/{seed}/{epoch}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # < 2**63: accepted by torch.manual_seed


def launch(program: Sequence[str], nproc: int, *, env: Mapping[str, str] | None = None) -> int:
    """Run ``program`` in ``nproc`` processes on this machine with torch's launcher,
    ``python -m torch.distributed.run --standalone --nproc-per-node nproc <program>``;
    returns its exit status.

    Args:
        program: what follows torchrun's own options: ``["-m", "qtrain.cli", "train", ...]``
            or ``["train.py", "--epochs", "3"]``.
        nproc: processes (>= 1).
        env: the workers' environment (default: this one). ``OMP_NUM_THREADS``, when
            unset, becomes this machine's cores divided by ``nproc`` (torchrun would use 1).

    Raises:
        ValueError: ``nproc`` < 1, or this process is itself a torchrun worker (a launch
            from inside one would nest process groups).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"the number of processes must be an int >= 1, got {nproc!r}")
    if launched_by_torchrun():
        raise ValueError(f"this process is already one of torchrun's {os.environ['WORLD_SIZE']} workers: "
                         "do not ask it to launch more (drop --nproc)")
    env = dict(os.environ if env is None else env)
    if "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *program]
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached torchrun as well, which stops its workers: wait for
        # that rather than kill it, which would orphan them.
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        raise
