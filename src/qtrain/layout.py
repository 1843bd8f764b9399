"""Which of a model's parameters are generated, and where each lives in the weight vector."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TensorSlot", "WeightLayout", "match_modules"]


def match_modules(model: nn.Module, patterns: str | Sequence[str], what: str) -> list[str]:
    """Qualified names of ``model``'s submodules that ``patterns`` select, PEFT-style: a
    string is a regular expression matched against the whole name; a list holds names,
    each matching that module or any module whose name ends with ``"." + name``.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
    >>> match_modules(net, ["0"], "t"), match_modules(net, r"1[.][0-9]+", "t")
    (['0', '1.0'], ['1.0'])

    Raises:
        ValueError: nothing matches (the model's module names are listed).
    """
    names = [n for n, _ in model.named_modules() if n]
    if isinstance(patterns, str):
        found = [n for n in names if re.fullmatch(patterns, n)]
    else:
        found = [n for n in names if any(n == p or n.endswith("." + p) for p in patterns)]
    if not found:
        shown = ", ".join(names[:30]) + (", ..." if len(names) > 30 else "")
        raise ValueError(f"`{what}`={patterns!r} matches no module of {type(model).__name__}; its modules: {shown}")
    return found


def _inside(param: str, modules: Sequence[str]) -> bool:
    owner = param.rpartition(".")[0]
    return any(owner == m or owner.startswith(m + ".") for m in modules)


@dataclass(frozen=True)
class TensorSlot:
    """One generated parameter.

    Attributes:
        name: its first name in ``named_parameters()``.
        aliases: every name it is registered under (tied weights), ``name`` first.
        shape: its shape; its slice of the weight vector is reshaped row-major to it.
        offset: where its slice starts.
        dtype: the parameter's dtype; generated values are cast to it.
    """

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    offset: int
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class WeightLayout:
    """The generated weights of a model, in ``named_parameters()`` order, row-major.

    Trainable floating parameters are generated; a parameter shared by several modules
    (tied) is generated once. Frozen parameters (``requires_grad=False``) are not
    generated and stay the model's own.

    >>> layout = WeightLayout.from_module(torch.nn.Linear(3, 2))
    >>> [(s.name, s.shape, s.offset) for s in layout.slots], layout.n_generated
    ([('weight', (2, 3), 0), ('bias', (2,), 6)], 8)
    """

    slots: tuple[TensorSlot, ...]
    frozen: tuple[str, ...]
    classical: tuple[str, ...] = ()
    """Parameters that are not generated but stay trainable (``modules_to_save``)."""

    @property
    def n_generated(self) -> int:
        """M, the number of generated scalars."""
        return sum(s.numel for s in self.slots)

    @classmethod
    def from_module(cls, model: nn.Module, select: Callable[[str], bool] | None = None) -> "WeightLayout":
        """Read the layout off ``model``: every trainable floating parameter for which
        ``select(name)`` holds (all of them by default) is generated; trainable ones it
        rejects are listed in ``classical``.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``; it has a complex or integer
                parameter (QT generates real floating weights only).
            ValueError: it has no trainable floating parameter.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        aliases: dict[int, list[str]] = {}
        params: dict[int, nn.Parameter] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if p.is_complex() or not p.is_floating_point():
                raise TypeError(
                    f"parameter `{name}` has dtype {p.dtype}; QT generates real floating-point weights only. "
                    "Make it a buffer, or a real float parameter."
                )
            aliases.setdefault(id(p), []).append(name)
            params[id(p)] = p
        slots, frozen, classical, offset = [], [], [], 0
        for key, names in aliases.items():
            p = params[key]
            if not p.requires_grad:
                frozen.extend(names)
                continue
            if select is not None and not select(names[0]):
                classical.extend(names)
                continue
            slot = TensorSlot(names[0], tuple(names), tuple(p.shape), offset, p.dtype)
            slots.append(slot)
            offset += slot.numel
        if not slots:
            raise ValueError(
                f"{type(model).__name__} has no trainable floating-point parameter to generate "
                "(all are frozen or not targeted, or there are none). Unfreeze the parameters QT should train."
            )
        return cls(tuple(slots), tuple(frozen), tuple(classical))

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        *,
        target_modules: str | Sequence[str] | None = None,
        exclude_modules: str | Sequence[str] | None = None,
        modules_to_save: str | Sequence[str] | None = None,
    ) -> "WeightLayout":
        """The layout :class:`~qtrain.QuantumTrain` uses. Without targets every trainable
        parameter is generated. With them, only the parameters inside a targeted (and not
        excluded) module are; the rest are frozen in place, except those inside
        ``modules_to_save``, which stay trainable as ordinary parameters.
        """
        if target_modules is None and exclude_modules is None and modules_to_save is None:
            return cls.from_module(model)
        names = [n for n, _ in model.named_parameters()]
        chosen = match_modules(model, target_modules, "target_modules") if target_modules is not None else None
        excluded = match_modules(model, exclude_modules, "exclude_modules") if exclude_modules is not None else []
        saved = match_modules(model, modules_to_save, "modules_to_save") if modules_to_save is not None else []

        def generated(name: str) -> bool:
            return (chosen is None or _inside(name, chosen)) and not _inside(name, excluded)

        for name, p in model.named_parameters():
            if not generated(name) and not _inside(name, saved):
                p.requires_grad_(False)
        return cls.from_module(model, select=generated)

    @classmethod
    def for_lora(cls, model: nn.Module, modules: Sequence[str], rank: int,
                 modules_to_save: str | Sequence[str] | None = None) -> "WeightLayout":
        """LoRA factors ``<module>.lora_A`` ``(r, in)`` and ``<module>.lora_B`` ``(out, r)``
        for each listed ``nn.Linear``; every parameter of the model is frozen except those
        inside ``modules_to_save``.

        Raises:
            ValueError: a listed module is not an ``nn.Linear``.
        """
        saved = match_modules(model, modules_to_save, "modules_to_save") if modules_to_save is not None else []
        frozen, classical = [], []
        for name, p in model.named_parameters(remove_duplicate=False):
            if _inside(name, saved) and p.requires_grad:
                classical.append(name)
            else:
                p.requires_grad_(False)
                frozen.append(name)
        slots, offset = [], 0
        for m in modules:
            layer = model.get_submodule(m)
            if type(layer) is not nn.Linear:
                raise ValueError(f"LoRA adapts nn.Linear layers; `{m}` is a {type(layer).__name__} "
                                 "(narrow `target_modules`)")
            for suffix, shape in (("lora_A", (rank, layer.in_features)), ("lora_B", (layer.out_features, rank))):
                slot = TensorSlot(f"{m}.{suffix}", (f"{m}.{suffix}",), shape, offset, layer.weight.dtype)
                slots.append(slot)
                offset += slot.numel
        return cls(tuple(slots), tuple(frozen), tuple(classical))

    def describe(self) -> list[list]:
        """``[[name, [shape...]], ...]``: what a checkpoint records and checks."""
        return [[s.name, list(s.shape)] for s in self.slots]
