"""Training checkpoints that survive a SIGKILL: one safetensors file, no pickle.

A checkpoint holds everything a run needs to continue bit for bit: the module's
state_dict, the optimizer's tensors, the scheduler's state, the data-order generator's
and the global RNG's states, the epoch reached, the metrics so far and the run's
settings. Tensors go in the safetensors body; everything else is JSON in its metadata.
It is written to a temporary file, fsynced and renamed over the old one, so a kill at
any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._io import atomic_write
from ._version import __version__

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta"]

FORMAT = "qtrain-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, foreign, or from a run with other settings."""


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generators: dict[str, torch.Generator],
    epoch: int,
    history: list[dict],
    settings: dict,
) -> None:
    """Write a checkpoint atomically (see the module docstring)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    for name, gen in generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    tensors["rng.torch_global"] = torch.get_rng_state()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "qtrain_version": __version__,
        "epoch": str(epoch),
        "history": json.dumps(history),
        "settings": json.dumps(settings, sort_keys=True),
        "optim_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict()),
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata: ``epoch`` (int), ``history`` (list), ``settings`` (dict).

    Raises:
        CheckpointError: unreadable, or not a qtrain checkpoint.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors' own error types
        raise CheckpointError(f"{path} is corrupt or not a safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qtrain training checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        return {**meta, "epoch": int(meta["epoch"]), "history": json.loads(meta["history"]),
                "settings": json.loads(meta["settings"])}
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({e})") from None


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generators: dict[str, torch.Generator],
    settings: dict,
) -> tuple[int, list[dict]]:
    """Restore a checkpoint into live objects; returns ``(epoch, history)``.

    Raises:
        CheckpointError: corrupt or foreign file, or ``settings`` differ from the run
            that wrote it (the differing keys are listed).
    """
    meta = read_checkpoint_meta(path)
    saved = meta["settings"]
    mine = json.loads(json.dumps(settings, sort_keys=True))
    if saved != mine:
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        details = "\n".join(f"  {k}: checkpoint {saved.get(k)!r}, now {mine.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path} was written by a run with other settings:\n{details}")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    device = next(model.parameters()).device
    state = {k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model:\n{e}") from None
    opt_state: dict = {"state": {}, "param_groups": json.loads(meta["optim_groups"])}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state["state"].setdefault(int(idx), {})[name] = value.to(device) if name != "step" else value
    for idx, values in json.loads(meta["optim_scalars"]).items():
        opt_state["state"].setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(json.loads(meta["scheduler"]))
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.torch_global"])
    return meta["epoch"], meta["history"]
