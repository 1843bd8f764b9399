"""The generator: probability source -> transform -> mapping -> M weights.

This is the one replaceable piece behind :class:`~qtrain.QuantumTrain`: anything that
returns ``2^N`` probabilities (the QNN, or later a baseline) can be the source, and
the wrapper only ever asks for the weight vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mapping import MappingModel, ProbabilityTransform, bit_features

__all__ = ["WeightGenerator"]


class WeightGenerator(nn.Module):
    """``() -> (M,)`` weights, one row of the mapping per weight.

    .. math::

        p = \\text{source}(),\\quad x = T(p)_{:M},\\quad
        w_i = o_{s(i)} + g_{s(i)} \\, G([b_i, x_i])

    where ``b_i`` are the +-1 bits of ``i`` and ``g_s``, ``o_s`` an optional fixed gain
    and offset per generated tensor ``s``.

    Args:
        source: a module whose call returns the ``(2^N,)`` probabilities.
        transform: :class:`~qtrain.mapping.ProbabilityTransform` (keeps the first M).
        mapping: :class:`~qtrain.mapping.MappingModel` over ``N + 1`` inputs.
        n_qubits: N.
        sizes: numel of each generated tensor, in order (they sum to M).
        gains, offsets: one fixed multiplier / offset per tensor (saved buffers,
            assignable later), or ``None`` for none.
    """

    def __init__(
        self,
        source: nn.Module,
        transform: ProbabilityTransform,
        mapping: MappingModel,
        *,
        n_qubits: int,
        sizes: Sequence[int],
        gains: Tensor | None = None,
        offsets: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.transform = transform
        self.mapping = mapping
        self.n_generated = int(sum(sizes))
        self.n_qubits = n_qubits
        dtype = next(mapping.parameters()).dtype
        # The bits never change: computed once, not saved (they follow from M and N).
        self.register_buffer("bits", bit_features(n_qubits, self.n_generated, dtype=dtype), persistent=False)
        self.register_buffer("sizes", torch.tensor(list(sizes), dtype=torch.long), persistent=False)
        self.register_buffer("gains", None if gains is None else gains.to(dtype))
        self.register_buffer("offsets", None if offsets is None else offsets.to(dtype))

    def forward(self) -> Tensor:
        probs = self.source()  # (2^N,)
        x = self.transform(probs)  # (M,)
        rows = torch.cat([self.bits, x.unsqueeze(1).to(self.bits.dtype)], dim=1)  # (M, N+1)
        w = self.mapping(rows)  # (M,)
        if self.gains is not None:
            w = w * torch.repeat_interleave(self.gains, self.sizes, output_size=self.n_generated)
        if self.offsets is not None:
            w = w + torch.repeat_interleave(self.offsets, self.sizes, output_size=self.n_generated)
        return w
