"""Which of a model's parameters are generated, and where each lives in the weight vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TensorSlot", "WeightLayout"]


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

    @property
    def n_generated(self) -> int:
        """M, the number of generated scalars."""
        return sum(s.numel for s in self.slots)

    @classmethod
    def from_module(cls, model: nn.Module) -> "WeightLayout":
        """Read the layout off ``model``.

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
        slots, frozen, offset = [], [], 0
        for key, names in aliases.items():
            p = params[key]
            if not p.requires_grad:
                frozen.extend(names)
                continue
            slot = TensorSlot(names[0], tuple(names), tuple(p.shape), offset, p.dtype)
            slots.append(slot)
            offset += slot.numel
        if not slots:
            raise ValueError(
                f"{type(model).__name__} has no trainable floating-point parameter to generate "
                "(all are frozen, or there are none). Unfreeze the parameters QT should train."
            )
        return cls(tuple(slots), tuple(frozen))

    def describe(self) -> list[list]:
        """``[[name, [shape...]], ...]``: what a checkpoint records and checks."""
        return [[s.name, list(s.shape)] for s in self.slots]
