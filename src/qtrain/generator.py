"""The generator: probability source -> transform -> mapping -> M weights.

This is the one replaceable piece behind :class:`~qtrain.QuantumTrain`: anything that
returns ``2^N`` probabilities (the QNN, or later a baseline) can be the source, and
the wrapper only ever asks for the weight vector.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import native
from .mapping import MappingModel, ProbabilityTransform, bit_features, plain_modules

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
        if self.bits is not None and self.n_rows <= self.chunk_rows:  # one pass against the cached bit table
            affine = self.mapping.as_affine()  # activation-free (the paper's): one small product, not the chain
            if affine is not None:
                out = self._affine_rows(x, 0, *affine, bits=self.bits)  # (R, C)
            else:
                # a non-linear MLP through autograd as it is: over one chunk its engine beats the
                # hand-written backward below, and splitting off the bit columns costs more
                # elementwise passes than their gradient saves (measured at R = 6,690)
                kern = _MLPKernel.of(self.mapping, n_qubits=self.n_qubits, n_rows=self.n_rows, device=x.device)
                if kern is not None:  # the compiled kernel, with autograd's own graph for higher derivatives
                    out = kern.run(x, higher_order=True)
                else:
                    out = self.mapping.rows(torch.cat([self.bits, x.unsqueeze(1).to(self.bits.dtype)], dim=1))
        else:
            # an activation-free mapping (the paper's) is one affine map: collapse it once per
            # call, so each row costs (N + 1) C multiply-adds instead of the whole chain
            affine = self.mapping.as_affine()
            aligned = self.chunk_rows & (self.chunk_rows - 1) == 0  # a power of two
            low = self.chunk_rows.bit_length() - 1
            spec = None if affine is not None or not aligned else _MLPSpec.of(
                self.mapping.net, n_qubits=self.n_qubits, n_rows=self.n_rows, low=low)
            kern = None if affine is not None else _MLPKernel.of(self.mapping, n_qubits=self.n_qubits,
                                                                  n_rows=self.n_rows, device=x.device)
            if affine is not None and aligned:
                out = self._affine_all(x, *affine)
            elif kern is not None:  # all rows in one call, each tile recomputed in the backward
                out = kern.run(x, higher_order=False)
            elif spec is not None:
                out = spec.run(x, bit_features(low, 2**low, dtype=spec.dtype, device=x.device))
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

    def _affine_rows(self, part: Tensor, lo: int, weight: Tensor, bias: Tensor, *,
                     bits: Tensor | None = None) -> Tensor:
        base = torch.addcmul(bias, part.to(weight.dtype).unsqueeze(1), weight[:, -1])  # (K, C)
        bits = self._bits(part, lo, weight.dtype) if bits is None else bits
        return torch.addmm(base, bits, weight[:, :-1].T)


def _first_derivatives_only() -> None:
    """The chunked mapping's backward passes compute first derivatives only: refuse a
    ``create_graph=True`` backward instead of returning second derivatives that miss terms."""
    if torch.is_grad_enabled():
        raise RuntimeError("second derivatives through the chunked mapping are not supported (the generator has "
                           "more rows than `chunk_rows`); raise `generator.chunk_rows` above the row count for one pass")


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
        _first_derivatives_only()
        part, *params = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip([part, *params], ctx.needs_input_grad[2:])]
            out = ctx.fn(leaves[0], ctx.lo, *leaves[1:])
            wrt = [t for t, need in zip(leaves, ctx.needs_input_grad[2:]) if need]
            grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return None, None, *(next(grads) if need else None for need in ctx.needs_input_grad[2:])


def _act_kind(module: nn.Module) -> tuple[str, str] | None:
    """``(kind, gelu approximation)`` of an activation the hand-written backward knows."""
    if type(module) is nn.GELU:
        return "gelu", module.approximate
    for kind, cls in (("relu", nn.ReLU), ("silu", nn.SiLU), ("tanh", nn.Tanh)):
        if type(module) is cls:  # (an in-place flag changes nothing here: every output is fresh)
            return kind, "none"
    return None


def _act(kind: tuple[str, str], h: Tensor) -> Tensor:
    name, approximate = kind
    if name == "gelu":
        return torch.nn.functional.gelu(h, approximate=approximate)
    return {"relu": torch.relu, "silu": torch.nn.functional.silu, "tanh": torch.tanh}[name](h)


def _act_backward(kind: tuple[str, str], grad: Tensor, h: Tensor, a: Tensor) -> Tensor:
    """dL/dh from dL/da for ``a = act(h)`` (aten's own derivative kernels)."""
    name, approximate = kind
    if name == "gelu":
        return torch.ops.aten.gelu_backward(grad, h, approximate=approximate)
    if name == "relu":
        return torch.ops.aten.threshold_backward(grad, a, 0)
    if name == "silu":
        return torch.ops.aten.silu_backward(grad, h)
    return torch.ops.aten.tanh_backward(grad, a)


class _MLPSpec:
    """A mapping MLP ``Linear (act Linear)*`` evaluated over the rows ``[bits(r), x_r]``
    of a generator in chunks, forward and backward by hand (:class:`_MLPRows`).

    Row ``r = (hi, lo)`` splits its N bits into the high ``N - low`` and the low ``low``:
    the first layer is ``lo_part[lo] + hi_part[hi] + b + x_r w_x`` with ``lo_part`` one
    ``(2^low, H)`` table for every chunk of ``2^low`` rows, so no bit table of R rows
    exists. The backward recomputes each chunk's activations. First derivatives only.
    """

    def __init__(self, linears: list[nn.Linear], acts: list, *, n_qubits: int, n_rows: int, low: int) -> None:
        if not 0 <= low <= n_qubits:
            raise ValueError(f"`low` must be in [0, {n_qubits}], got {low}")
        self.linears, self.acts = linears, acts
        self.n_qubits, self.n_rows, self.low = n_qubits, n_rows, low
        self.chunk_rows = 2**low
        self.dtype = linears[0].weight.dtype

    @classmethod
    def of(cls, net: nn.Module, **kw) -> _MLPSpec | None:
        """The spec of ``net``, or ``None`` when it is not a plain ``nn.Sequential`` of
        ``nn.Linear`` s and known activations without hooks (then autograd evaluates it as
        it is)."""
        if type(net) is not nn.Sequential or len(net) == 0 or not plain_modules(net):
            return None
        mods, linears, acts = list(net), [], []
        while mods:
            lin = mods.pop(0)
            if type(lin) is not nn.Linear:
                return None
            act = None
            if mods and type(mods[0]) is not nn.Linear:
                act = _act_kind(mods.pop(0))
                if act is None:
                    return None
            linears.append(lin)
            acts.append(act)
        if acts[-1] is not None or linears[0].bias is None:
            return None
        return cls(linears, acts, **kw)

    def run(self, x: Tensor, lo_bits: Tensor) -> Tensor:
        """``(R,) -> (R, C)``, differentiable in ``x`` and the layers' current tensors."""
        params = [t for lin in self.linears for t in (lin.weight, lin.bias) if t is not None]
        x = x.to(self.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return _MLPRows.apply(self, lo_bits, x, *params)
        return self.forward(lo_bits, x, self.unpack(params))

    def unpack(self, params) -> list[tuple[Tensor, Tensor | None]]:
        it = iter(params)
        return [(next(it), next(it) if lin.bias is not None else None) for lin in self.linears]

    def chunks(self):
        for lo in range(0, self.n_rows, self.chunk_rows):
            yield lo, min(self.chunk_rows, self.n_rows - lo)

    def hi_bits(self, lo: int, device) -> Tensor:
        return bit_features(self.n_qubits - self.low, 1, start=lo >> self.low, dtype=self.dtype, device=device)[0]

    def first(self, lo_part: Tensor, w0: Tensor, b0: Tensor, x: Tensor, lo: int, k: int) -> Tensor:
        high = self.n_qubits - self.low
        base = b0 + w0[:, :high] @ self.hi_bits(lo, x.device) if high else b0
        return (lo_part[:k] + base).addcmul_(x[lo : lo + k, None], w0[:, -1])  # (addr is ~1.5x slower)

    def forward(self, lo_bits: Tensor, x: Tensor, layers) -> Tensor:
        """``(R, C)`` outputs."""
        w0 = layers[0][0]
        lo_part = lo_bits @ w0[:, self.n_qubits - self.low : self.n_qubits].T
        out = torch.empty(self.n_rows, layers[-1][0].shape[0], dtype=self.dtype, device=x.device)
        for lo, k in self.chunks():
            out[lo : lo + k] = self.layers(lo_part, x, layers, lo, k)[0]
        return out

    def layers(self, lo_part: Tensor, x: Tensor, layers, lo: int, k: int) -> tuple[Tensor, list]:
        """One chunk's outputs and each hidden layer's ``(pre-activation, activation)``."""
        h, pairs = self.first(lo_part, layers[0][0], layers[0][1], x, lo, k), []
        for (w, b), act in zip(layers[1:], self.acts):
            a = _act(act, h)
            pairs.append((h, a))
            h = torch.addmm(b, a, w.T) if b is not None else a @ w.T
        return h, pairs


class _MLPRows(torch.autograd.Function):
    """:class:`_MLPSpec`'s MLP with a hand-written backward: each chunk's activations are
    recomputed and its parameter gradients accumulate in place, with aten's own activation
    derivatives; the first layer's bit columns get theirs from the two bit tables
    (``g^T lo_bits`` and the per-chunk row sums against the high bits)."""

    @staticmethod
    def forward(ctx, spec: _MLPSpec, lo_bits: Tensor, x: Tensor, *params: Tensor) -> Tensor:
        out = spec.forward(lo_bits, x, spec.unpack(params))
        ctx.spec = spec
        ctx.save_for_backward(lo_bits, x, *params)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        _first_derivatives_only()
        with torch.no_grad():
            return _MLPRows._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        spec = ctx.spec
        lo_bits, x, *params = ctx.saved_tensors
        layers = spec.unpack(params)
        n, low = spec.n_qubits, spec.low
        w0 = layers[0][0]
        lo_part = lo_bits @ w0[:, n - low : n].T
        g_layers = [(torch.zeros_like(w), None if b is None else torch.zeros_like(b)) for w, b in layers]
        g_lo = torch.zeros_like(lo_part)
        g_x = torch.empty_like(x) if ctx.needs_input_grad[2] else None
        row_sums, his = [], []
        for lo, k in spec.chunks():
            g = grad[lo : lo + k]
            pairs = spec.layers(lo_part, x, layers, lo, k)[1]
            for i in range(len(layers) - 1, 0, -1):  # g: dL/d(layer i's output)
                w, (gw, gb), (h, a) = layers[i][0], g_layers[i], pairs[i - 1]
                gw.addmm_(g.T, a)
                if gb is not None:
                    gb += g.sum(0)
                g = _act_backward(spec.acts[i - 1], g @ w, h, a)
            g_lo[:k] += g  # g: dL/d(first layer's output), (k, H)
            row_sums.append(g.sum(0))
            his.append(spec.hi_bits(lo, x.device))
            g_layers[0][0][:, -1].addmv_(g.T, x[lo : lo + k])
            if g_x is not None:
                torch.mv(g, w0[:, -1], out=g_x[lo : lo + k])
        gw0, gb0 = g_layers[0]
        sums = torch.stack(row_sums)  # (chunks, H)
        gb0 += sums.sum(0)
        gw0[:, n - low : n] = g_lo.T @ lo_bits
        if n > low:
            gw0[:, : n - low] = sums.T @ torch.stack(his)
        flat = [t for pair in g_layers for t in pair if t is not None]
        return None, None, g_x, *(t if need else None for t, need in zip(flat, ctx.needs_input_grad[3:]))


_KERNEL_ACTS = {None: 0, ("relu", "none"): 1, ("gelu", "none"): 2, ("silu", "none"): 3, ("tanh", "none"): 4}


class _MLPKernel:
    """A mapping MLP ``Linear (act Linear)*`` (one activation kind throughout) over the
    rows ``[bits(r), x_r]``, ``r < R``, through the compiled kernel ``native/_mlp.c``:
    the bit columns become two small tables, rows go through in cache-sized tiles and the
    backward recomputes each tile, so nothing per row is kept but ``x``. Float32 / float64
    on the CPU; :meth:`of` says ``None`` where it does not apply (then PyTorch runs it).
    """

    def __init__(self, spec: _MLPSpec, act: int, lib: ctypes.CDLL) -> None:
        self.spec, self.act, self.lib = spec, act, lib
        widths = [lin.out_features for lin in spec.linears]
        self.widths = (ctypes.c_int * len(widths))(*widths)

    @classmethod
    def of(cls, mapping: nn.Module, *, n_qubits: int, n_rows: int, device) -> _MLPKernel | None:
        if type(mapping) is not MappingModel or torch.device(device).type != "cpu":
            return None  # (a subclass may change rows(); the kernel computes MappingModel's)
        spec = _MLPSpec.of(mapping.net, n_qubits=n_qubits, n_rows=n_rows, low=0)
        if spec is None or not 2 <= len(spec.linears) <= 64:  # (the kernel takes up to 64 layers)
            return None
        kinds = {_KERNEL_ACTS.get(act, -1) for act in spec.acts[:-1]}
        tensors = [t for lin in spec.linears for t in (lin.weight, lin.bias) if t is not None]
        if len(kinds) != 1 or -1 in kinds or any(t.dtype != spec.dtype or t.device.type != "cpu" for t in tensors):
            return None  # mixed or unknown activations (e.g. tanh-approximate GELU), mixed dtypes
        lib = native.library(spec.dtype, "mlp")
        return None if lib is None else cls(spec, kinds.pop(), lib)

    def run(self, x: Tensor, *, higher_order: bool) -> Tensor:
        """``(R,) -> (R, C)``, differentiable in ``x`` and the layers' current tensors;
        with ``higher_order`` a backward under ``create_graph=True`` goes through PyTorch's
        layers (so second derivatives are exact), else it is refused."""
        params = [t for lin in self.spec.linears for t in (lin.weight, lin.bias) if t is not None]
        return _MLPKernelRows.apply(self, higher_order, x.to(self.spec.dtype), *params)

    def _args(self, x: Tensor, layers) -> tuple:
        spec = self.spec
        ws, bs = _pointers([w for w, _ in layers]), _pointers([b for _, b in layers])
        return (len(layers) - 1, self.widths, spec.n_qubits, spec.n_rows, self.act, torch.get_num_threads(),
                x.data_ptr(), ws, bs)

    def forward(self, x: Tensor, layers) -> Tensor:
        out = torch.empty(self.spec.n_rows, layers[-1][0].shape[0], dtype=self.spec.dtype)
        native.check(self.lib.qt_mlp_forward(*self._args(x, layers), out.data_ptr()), "mapping")
        return out

    def backward(self, x: Tensor, layers, grad: Tensor, need_x: bool, need: list[bool]):
        g_x = torch.empty_like(x) if need_x else None
        it = iter(need)
        g_layers = [(torch.empty_like(w) if next(it) else None, None if b is None else (
            torch.empty_like(b) if next(it) else None)) for w, b in layers]
        native.check(self.lib.qt_mlp_backward(*self._args(x, layers), grad.data_ptr(),
                                              None if g_x is None else g_x.data_ptr(),
                                              _pointers([g for g, _ in g_layers]), _pointers([g for _, g in g_layers])),
                     "mapping")
        return g_x, [t for pair, (_, b) in zip(g_layers, layers) for t in (pair if b is not None else pair[:1])]

    def reference(self, x: Tensor, layers) -> Tensor:
        """The same MLP through PyTorch's ops over the explicit rows (for higher derivatives)."""
        spec = self.spec
        h = torch.cat([bit_features(spec.n_qubits, spec.n_rows, dtype=spec.dtype), x.unsqueeze(1)], dim=1)
        for i, (w, b) in enumerate(layers):
            if i:
                h = _act(spec.acts[i - 1], h)
            h = torch.nn.functional.linear(h, w, b)
        return h


def _pointers(tensors: list[Tensor | None]) -> ctypes.Array:
    """A C array of the tensors' data pointers (NULL for ``None``); the caller keeps the tensors alive."""
    return (ctypes.c_void_p * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


class _MLPKernelRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kern: _MLPKernel, higher_order: bool, x: Tensor, *params: Tensor) -> Tensor:
        ctx.kern, ctx.higher_order = kern, higher_order
        ctx.save_for_backward(x, *params)  # as given: a create_graph backward differentiates through them
        return kern.forward(x.contiguous(), kern.spec.unpack([p.contiguous() for p in params]))

    @staticmethod
    def backward(ctx, grad: Tensor):
        kern = ctx.kern
        x, *params = ctx.saved_tensors
        need_x, need = ctx.needs_input_grad[2], list(ctx.needs_input_grad[3:])
        if torch.is_grad_enabled():  # create_graph=True: the kernel's backward is first-order only
            if not ctx.higher_order:
                _first_derivatives_only()
            wrt = [t for t, n in zip([x, *params], [need_x, *need]) if n]
            out = kern.reference(x, kern.spec.unpack(params))
            grads = iter(torch.autograd.grad(out, wrt, grad, create_graph=True, allow_unused=True))
            return None, None, *(next(grads) if n else None for n in [need_x, *need])
        layers = kern.spec.unpack([p.detach().contiguous() for p in params])
        g_x, g_params = kern.backward(x.detach().contiguous(), layers, grad.contiguous(), need_x, need)
        return None, None, g_x, *g_params
