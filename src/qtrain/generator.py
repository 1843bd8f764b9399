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
    r"""``() -> (M,)`` weights, one row of the mapping per C weights.

    .. math::

        p = \text{source}(),\quad x = T(p)_{:R},\quad
        w_{rC + c} = o_{s} + g_{s} \, G([b_r, x_r])_c \quad (s \text{ the tensor holding that weight})

    for rows ``r < R = ceil(M / C)``, where ``b_r`` are the +-1 bits of ``r``, ``G`` the
    mapping's output mean-centred (over all M weights, or over each tensor's own) and
    ``g_s``, ``o_s`` an optional fixed gain and offset per generated tensor. C = 1 is
    the papers' one weight per basis state.

    Args:
        source: a module whose call returns the ``(2^N,)`` probabilities.
        transform: :class:`~qtrain.mapping.ProbabilityTransform` (keeps the first R).
        mapping: :class:`~qtrain.mapping.MappingModel` over ``N + 1`` inputs with C outputs.
        n_qubits: N.
        sizes: numel of each generated tensor, in order (they sum to M).
        gains, offsets: one fixed multiplier / offset per tensor (saved buffers,
            assignable later), or ``None`` for none.
        chunk_rows: mapping rows per chunk once R exceeds it (see :data:`CHUNK_ROWS`);
            the result is the same as in one pass (up to float summation order).
        center_tensors: subtract each tensor's own mean from its share of the mapping
            output (before the gain and offset); tensors of one weight are left as they are.
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
        center_tensors: bool = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.transform = transform
        self.mapping = mapping
        self.n_generated = int(sum(sizes))
        self.chunk_size = mapping.n_outputs  # C
        self.n_rows = -(-self.n_generated // self.chunk_size)  # R
        if self.n_rows > 2**n_qubits:
            raise ValueError(f"{self.n_rows:,} rows need more than the {2**n_qubits:,} basis states of {n_qubits} qubits")
        self.n_qubits = n_qubits
        self.chunk_rows = int(chunk_rows)
        dtype = next(mapping.parameters()).dtype
        # The bits never change: computed once, not saved (they follow from R and N). Past
        # one chunk they are made per chunk instead (R x N floats is 370 MB at N = 22).
        bits = bit_features(n_qubits, self.n_rows, dtype=dtype) if self.n_rows <= self.chunk_rows else None
        self.register_buffer("bits", bits, persistent=False)
        self.register_buffer("sizes", torch.tensor(list(sizes), dtype=torch.long), persistent=False)
        self.center_tensors = bool(center_tensors)
        self._split_sizes = [int(n) for n in sizes]
        self.register_buffer("_multi", torch.tensor([float(n > 1) for n in sizes], dtype=dtype), persistent=False)
        self.register_buffer("gains", None if gains is None else gains.to(dtype))
        self.register_buffer("offsets", None if offsets is None else offsets.to(dtype))
        # QT-LoRA: B's start values, subtracted so that B starts at exactly 0
        self.register_buffer("anchor", None)

    def forward(self) -> Tensor:
        probs = self.source()  # (2^N,)
        x = self.transform(probs)  # (R,)
        if self.bits is not None and self.n_rows <= self.chunk_rows:
            rows = torch.cat([self.bits, x.unsqueeze(1).to(self.bits.dtype)], dim=1)  # (R, N+1)
            out = self.mapping.rows(rows)  # (R, C)
        else:
            # an activation-free mapping (the paper's) is one affine map: collapse it once per
            # call, so each row costs (N + 1) C multiply-adds instead of the whole chain
            affine = self.mapping.as_affine()
            aligned = self.chunk_rows & (self.chunk_rows - 1) == 0  # a power of two
            if affine is not None and aligned:
                out = self._affine_all(x, *affine)
            elif aligned and self._first_linear() is not None:
                out = self._mlp_all(x)
            else:
                out = torch.cat([self._chunk(x, lo, affine) for lo in range(0, self.n_rows, self.chunk_rows)])
        w = self.mapping.finish(out.reshape(-1)[: self.n_generated])  # the last row's surplus is dropped
        if self.center_tensors:
            w = w - torch.repeat_interleave(self._tensor_means(w), self.sizes, output_size=self.n_generated)
        if self.gains is not None:
            w = w * torch.repeat_interleave(self.gains, self.sizes, output_size=self.n_generated)
        if self.offsets is not None:
            w = w + torch.repeat_interleave(self.offsets, self.sizes, output_size=self.n_generated)
        if self.anchor is not None:
            w = w - self.anchor
        return w

    def _tensor_means(self, w: Tensor) -> Tensor:
        """Each generated tensor's mean, 0 for single-weight tensors (centring would pin them)."""
        means = torch.stack([part.mean() for part in w.split(self._split_sizes)])
        return means * self._multi

    def _chunk(self, x: Tensor, lo: int, affine: tuple[Tensor, Tensor] | None) -> Tensor:
        """Mapping outputs of rows ``lo .. lo + chunk_rows``; under autograd only the
        chunk's slice of ``x`` is kept, the activations are recomputed in the backward."""
        part = x[lo : lo + self.chunk_rows]
        # the tensors are captured now and passed explicitly: by the backward, an outer
        # torch.func.functional_call may have swapped the module's parameters back
        fn, params = (self._affine_rows, list(affine)) if affine is not None else (self._mlp_rows, [
            p for _, p in self.mapping.net.named_parameters()])
        if torch.is_grad_enabled() and (part.requires_grad or any(p.requires_grad for p in params)):
            return _Recompute.apply(fn, lo, part, *params)
        return fn(part, lo, *params)

    def _bits(self, part: Tensor, lo: int, dtype: torch.dtype) -> Tensor:
        return bit_features(self.n_qubits, part.shape[0], start=lo, dtype=dtype, device=part.device)

    def _mlp_rows(self, part: Tensor, lo: int, *params: Tensor) -> Tensor:
        rows = torch.cat([self._bits(part, lo, params[0].dtype), part.unsqueeze(1).to(params[0].dtype)], dim=1)
        names = [n for n, _ in self.mapping.net.named_parameters()]
        return torch.func.functional_call(self.mapping.net, dict(zip(names, params)), (rows,))

    def _first_linear(self) -> nn.Linear | None:
        net = self.mapping.net
        if isinstance(net, nn.Sequential) and len(net) > 1 and type(net[0]) is nn.Linear and net[0].bias is not None:
            return net[0]
        return None

    def _mlp_all(self, x: Tensor) -> Tensor:
        """The MLP over all rows in chunks of ``2^s`` rows, recomputed in the backward, its
        first layer without a bit table: the low ``s`` bits' share of it is one ``(2^s, H)``
        table for every chunk, the high bits' share one vector per chunk."""
        low = self.chunk_rows.bit_length() - 1
        weight = self._first_linear().weight
        lo_part = bit_features(low, 2**low, dtype=weight.dtype, device=x.device) @ weight[:, self.n_qubits - low:
                                                                                          self.n_qubits].T
        params = [p for _, p in self.mapping.net.named_parameters()]
        outs = []
        for lo in range(0, self.n_rows, self.chunk_rows):
            part = x[lo : lo + self.chunk_rows]
            if torch.is_grad_enabled():
                outs.append(_Recompute.apply(self._mlp_split_rows, lo, part, lo_part, *params))
            else:
                outs.append(self._mlp_split_rows(part, lo, lo_part, *params))
        return torch.cat(outs)

    def _mlp_split_rows(self, part: Tensor, lo: int, lo_part: Tensor, weight: Tensor, bias: Tensor,
                        *rest: Tensor) -> Tensor:
        low = self.chunk_rows.bit_length() - 1
        high = self.n_qubits - low
        hi = bit_features(high, 1, start=lo >> low, dtype=weight.dtype, device=part.device) @ weight[:, :high].T
        h = lo_part[: part.shape[0]] + (hi + bias) + part.to(weight.dtype).unsqueeze(1) * weight[:, -1]
        net = self.mapping.net
        names = [n for n, _ in net.named_parameters()][2:]
        return torch.func.functional_call(net[1:], dict(zip(names, rest)), (h,))

    def _affine_all(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """All R rows of an affine mapping without a bit table: row r = (hi, lo) splits its
        bits into the high ``N - s`` and the low ``s`` (``2^s = chunk_rows``), so
        ``bits(r) @ W_bits^T = hi_part[hi] + lo_part[lo]``: two small tables and one
        broadcast add instead of an R x N table and an R x N x C product."""
        low = min(self.chunk_rows.bit_length() - 1, self.n_qubits)
        high = self.n_qubits - low
        n_hi = -(-self.n_rows // 2**low)
        w_bits = weight[:, : self.n_qubits]
        lo_part = bit_features(low, 2**low, dtype=weight.dtype, device=x.device) @ w_bits[:, high:].T  # (2^s, C)
        hi_part = bias + bit_features(high, n_hi, dtype=weight.dtype, device=x.device) @ w_bits[:, :high].T
        rows = (hi_part.unsqueeze(1) + lo_part.unsqueeze(0)).reshape(-1, weight.shape[0])[: self.n_rows]
        return rows + x.to(weight.dtype).unsqueeze(1) * weight[:, -1]

    def _affine_rows(self, part: Tensor, lo: int, weight: Tensor, bias: Tensor) -> Tensor:
        base = bias + part.to(weight.dtype).unsqueeze(1) * weight[:, -1]  # (K, C)
        return torch.addmm(base, self._bits(part, lo, weight.dtype), weight[:, :-1].T)


class _Recompute(torch.autograd.Function):
    """``fn(part, lo, *params)`` kept as its inputs only; the backward runs it again under
    autograd.

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
            leaves = [t.detach().requires_grad_(need) for t, need in zip([part, *params], ctx.needs_input_grad[2:])]
            out = ctx.fn(leaves[0], ctx.lo, *leaves[1:])
            wrt = [t for t, need in zip(leaves, ctx.needs_input_grad[2:]) if need]
            grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return None, None, *(next(grads) if need else None for need in ctx.needs_input_grad[2:])
