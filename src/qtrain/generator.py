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

__all__ = ["CHUNK_ROWS", "WeightGenerator"]

CHUNK_ROWS = 1 << 14
"""Above this many weights the mapping runs over chunks of this many rows, recomputing
each chunk's activations in the backward instead of keeping them: with hidden widths
(32, 32) one pass keeps ~0.6 KiB per row (2.5 GiB at M = 2^22), chunks keep a few floats
per row plus one chunk's ~10 MiB, for one extra mapping forward. Small chunks also keep
the allocator's retained transients small."""


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
        chunk_rows: mapping rows per chunk once M exceeds it (see :data:`CHUNK_ROWS`);
            the result is the same as in one pass (up to float summation order).
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
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        super().__init__()
        self.source = source
        self.transform = transform
        self.mapping = mapping
        self.n_generated = int(sum(sizes))
        self.n_qubits = n_qubits
        self.chunk_rows = int(chunk_rows)
        self._affine: tuple[Tensor, Tensor] | None = None
        dtype = next(mapping.parameters()).dtype
        # The bits never change: computed once, not saved (they follow from M and N). Past
        # one chunk they are made per chunk instead (M x N floats is 370 MB at N = 22).
        bits = bit_features(n_qubits, self.n_generated, dtype=dtype) if self.n_generated <= self.chunk_rows else None
        self.register_buffer("bits", bits, persistent=False)
        self.register_buffer("sizes", torch.tensor(list(sizes), dtype=torch.long), persistent=False)
        self.register_buffer("gains", None if gains is None else gains.to(dtype))
        self.register_buffer("offsets", None if offsets is None else offsets.to(dtype))

    def forward(self) -> Tensor:
        probs = self.source()  # (2^N,)
        x = self.transform(probs)  # (M,)
        if self.bits is not None and self.n_generated <= self.chunk_rows:
            rows = torch.cat([self.bits, x.unsqueeze(1).to(self.bits.dtype)], dim=1)  # (M, N+1)
            w = self.mapping(rows)  # (M,)
        else:
            # an activation-free mapping (the paper's) is one affine map: collapse it once per
            # call, so each row costs N + 1 multiply-adds instead of the whole chain
            self._affine = self.mapping.as_affine()
            try:
                chunks = [self._chunk(x, lo) for lo in range(0, self.n_generated, self.chunk_rows)]
            finally:
                self._affine = None
            w = self.mapping.finish(torch.cat(chunks))
        if self.gains is not None:
            w = w * torch.repeat_interleave(self.gains, self.sizes, output_size=self.n_generated)
        if self.offsets is not None:
            w = w + torch.repeat_interleave(self.offsets, self.sizes, output_size=self.n_generated)
        return w

    def _chunk(self, x: Tensor, lo: int) -> Tensor:
        """Mapping outputs of rows ``lo .. lo + chunk_rows``; under autograd only the
        chunk's slice of ``x`` is kept, the activations are recomputed in the backward."""
        part = x[lo : lo + self.chunk_rows]
        affine = self.mapping.as_affine() if self._affine is None else self._affine
        fn, params = (self._affine_rows, list(affine)) if affine is not None else (self._mlp_rows, [
            p for p in self.mapping.parameters() if p.requires_grad])
        if torch.is_grad_enabled() and (part.requires_grad or any(p.requires_grad for p in params)):
            return _Recompute.apply(fn, lo, part, *params)
        return fn(part, lo, *params)

    def _bits(self, part: Tensor, lo: int, dtype: torch.dtype) -> Tensor:
        return bit_features(self.n_qubits, part.shape[0], start=lo, dtype=dtype, device=part.device)

    def _mlp_rows(self, part: Tensor, lo: int, *params: Tensor) -> Tensor:  # params: the module's own
        dtype = next(self.mapping.parameters()).dtype
        return self.mapping.rows(torch.cat([self._bits(part, lo, dtype), part.unsqueeze(1).to(dtype)], dim=1))

    def _affine_rows(self, part: Tensor, lo: int, weight: Tensor, bias: Tensor) -> Tensor:
        return torch.addmv(bias + part.to(weight.dtype) * weight[-1], self._bits(part, lo, weight.dtype), weight[:-1])


class _Recompute(torch.autograd.Function):
    """``fn(part, lo)`` kept as its inputs only; the backward runs it again under autograd.

    A few lines instead of ``torch.utils.checkpoint``, whose non-reentrant path imports
    ~800 modules (~75 MB of RSS) on first use. ``params`` (what ``fn`` reads besides
    ``part``) are inputs so that their gradients flow.
    """

    @staticmethod
    def forward(ctx, fn, lo, part, *params):
        ctx.fn, ctx.lo = fn, lo
        ctx.save_for_backward(part, *params)
        with torch.no_grad():
            return fn(part, lo, *params)

    @staticmethod
    def backward(ctx, grad):
        part, *params = ctx.saved_tensors
        with torch.enable_grad():
            # fresh leaves for tensors computed upstream (the collapsed affine map); the
            # module's own parameters are used as they are (fn reads them directly)
            leaves = [t.detach().requires_grad_(need) if t.grad_fn is not None or t is part else t
                      for t, need in zip([part, *params], ctx.needs_input_grad[2:])]
            out = ctx.fn(leaves[0], ctx.lo, *leaves[1:])
            wrt = [t for t, need in zip(leaves, ctx.needs_input_grad[2:]) if need]
            grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return None, None, *(next(grads) if need else None for need in ctx.needs_input_grad[2:])
