"""The fast simulator: gates fused into wire-window blocks, two ways to differentiate.

:mod:`qtrain.circuits.statevector` is the simple reference; this module computes the
same probabilities with far fewer, larger operations. (On the CPU, ``"ry-cnot-ring"``,
``"ry-cnot-chain"`` and, up to N = 14, ``"u3-cu3-ring"`` go instead to small compiled
kernels, :mod:`qtrain.circuits.kernel`, when they are built; everything below is then
their fallback and their cross-check.)

1. **Fusion** (:func:`compile_fast`, once per circuit). The wires are covered by
   *windows* of at most ``max_block`` consecutive wires that overlap by one wire
   (``[0, 4], [4, 8], [8, 12]`` for 13 wires and width 5). Gates are swept in
   dependency order: the earliest pending gate opens a window that contains its
   wires, and the window absorbs every pending gate that fits in it and whose
   predecessors (earlier gates on its wires) are already applied, so a layer of
   rotations plus a chain of adjacent two-qubit gates becomes one ``2^g x 2^g``
   matrix per window: ``"u3-cu3-ring"`` at N = 13 is three 32 x 32 blocks and one
   long-range CU3 per layer, ``"ry-cnot-ring"`` three real blocks and one long-range
   CNOT. A block is one (batched) GEMM on the ``(2^lo, 2^g, 2^(N-lo-g))`` view of the
   state. A two-qubit gate that fits in no window (a ring's wrap-around gate) is
   applied on its own, in place: a controlled rotation on the half of the state where
   its control reads 1, a CNOT as a swap of two quarters, a CZ as a sign flip of one
   quarter. No O(2^N) index or sign tensors are stored.
2. **Matrices** (:func:`build_matrices`, every call, autograd). Every gate's 2x2 matrix
   (the target matrix of a controlled gate; fixed gates and the identity as constant
   rows) is built in one batched call per gate type. Blocks with the same shape
   (width, and the local wires of the gates after each wire's leading single-qubit
   gate) form a class, built in one batched chain: the Kronecker product of the
   leading gates (identity where a wire has none; :class:`_Kron`, with a hand-written
   backward), then the remaining gates. When those remaining gates are all fixed (a
   CNOT chain) their product is a constant matrix, computed once; when it is a row
   permutation, it is folded into the Kronecker product's gather.
3. **Amplitudes** (hand-written forward and backward, ``torch.autograd.Function`` s),
   chosen by :func:`fast_probabilities`:

   - *stored* (:class:`_StoredProbs`; the default when gradients are needed and
     N <= :data:`AUTOGRAD_MAX_N`). The forward writes the state after every step into
     one pooled ``(steps + 1, 2^N)`` buffer (views pre-sliced once per buffer, so a step
     is one library call); the backward propagates ``lambda`` once through the steps
     into a second such buffer and then forms every block's gradient
     ``lambda_after psi_before^H`` in one batched product per block position. At N = 13
     the cost is the number of operations, not arithmetic: a step costs a few
     microseconds.
   - *adjoint* (:class:`_AdjointProbs`; larger N, and every forward without gradients).
     The forward applies the steps to ``|0...0>`` in two lent ``(2, 2^N)`` buffers and
     keeps only the final state ``psi`` there. The backward starts from
     ``lambda = 2 (dL/dp) psi`` and walks the steps in reverse, un-computing ``psi``
     with the inverse (adjoint) of each step and propagating ``lambda`` with the same
     operation, both stacked in one buffer, and forms each block's matrix gradient
     ``dL/dU = lambda_after psi_before^H``. Memory is O(2^N) whatever the depth.
   - *autograd*: the same fused steps out of place, differentiated by autograd (a
     cross-check of the two above; kept for tests).

   Either way autograd then carries the matrix gradients through step 2 to the angles.

With PyTorch's convention for complex gradients (``grad = dL/dRe + i dL/dIm``), for
``y = U x``: ``grad_x = U^H grad_y`` and ``grad_U = grad_y x^H``; for ``p = |psi|^2``:
``grad_psi = 2 grad_p psi``. Un-computing relies on every step being unitary; in
float32 its round-off grows slowly with depth (measured in the tests against the
autograd reference).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import kernel as _kernel
from .ansatze import Op
from .gates import GATES

__all__ = [
    "AUTOGRAD_MAX_N",
    "FastProgram",
    "build_matrices",
    "compile_fast",
    "fast_probabilities",
    "supports_fast",
    "uses_kernel",
]

_FIXED_2Q = {"CNOT": ((0, 1), (1, 0)), "CZ": ((1, 0), (0, -1))}  # target matrices
_IDENTITY = "I"  # the fixed row filling a window wire without a leading gate

AUTOGRAD_MAX_N = 14
"""Largest N for which :func:`fast_probabilities` differentiates with the *stored* backward
by default (it keeps the state before every step and the adjoint after it, ``2 (steps + 1)``
state vectors: about 5 MiB for u3-cu3-ring at N = 13, L = 10); larger circuits use the
O(2^N)-memory adjoint."""

_AUTOGRAD_MAX_BYTES = 256 * 2**20  # and never when the kept states and lambdas would exceed this


@dataclass
class _Block:
    lo: int  # first wire
    g: int  # number of wires
    lead: list  # per local wire: its leading single-qubit Op, or None (identity)
    tail: list  # the remaining ops, in an order that respects their dependencies
    tid: int = -1  # which matrix tensor
    k: int = -1  # row in it


@dataclass
class _Ctrl:
    """A controlled parametric gate that fits in no window: applied to the half of the
    state where its control reads 1."""

    control: int
    target: int
    op: Op
    tid: int = -1
    k: int = -1


@dataclass
class _Fixed2:
    """A CNOT (``kind="X"``: swap the target's halves where the control reads 1) or a CZ
    (``kind="Z"``: negate where both read 1) that fits in no window; both self-inverse."""

    kind: str
    control: int
    target: int


@dataclass
class _Class:
    """Blocks sharing one shape: their matrices are built in one batched chain."""

    g: int
    tail: tuple  # local wires of each tail op
    op_rows: list  # (K, g + len(tail)): rows of the leading gates (identity filled), then the tail's
    fixed_tail: bool  # every tail op is a fixed gate: their product is one constant matrix
    tid: int = -1


@dataclass
class FastProgram:
    """A circuit compiled for :func:`fast_probabilities`.

    Attributes:
        n_qubits: N.
        n_weights: the flat angle count.
        real: True when every gate is real (real-dtype amplitudes).
        steps: ``_Block`` / ``_Ctrl`` / ``_Fixed2`` in application order.
        param_index: gate name -> ``(count, n_params)`` long tensor of angle indices.
        fixed_names: the fixed 2x2 rows (after the parametric ones) blocks use.
        classes: the block classes; ``ctrl``: rows of the standalone controlled gates.
        max_block: the window width it was compiled with.
    """

    n_qubits: int
    n_weights: int
    real: bool
    steps: list
    param_index: dict
    fixed_names: list
    classes: list
    ctrl: Tensor | None
    n_ops: int
    max_block: int = 0
    kernel: tuple | None = None  # what a compiled kernel can run of it (qtrain.circuits.kernel.match)
    _moved: dict = field(default_factory=dict, repr=False)
    _work: dict = field(default_factory=dict, repr=False)

    def to(self, device: torch.device) -> FastProgram:
        """The same program with its index tensors on ``device`` (cached)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        if device not in self._moved:
            self._moved[device] = FastProgram(
                self.n_qubits,
                self.n_weights,
                self.real,
                self.steps,
                {g: i.to(device) for g, i in self.param_index.items()},
                self.fixed_names,
                [_Class(c.g, c.tail, c.op_rows.to(device), c.fixed_tail, c.tid) for c in self.classes],
                None if self.ctrl is None else self.ctrl.to(device),
                self.n_ops,
                self.max_block,
                self.kernel,
            )
        return self._moved[device]

    @property
    def n_blocks(self) -> int:
        return sum(isinstance(s, _Block) for s in self.steps)

    def workspace(self, dtype: torch.dtype, device: torch.device, owner=None) -> tuple[Tensor, Tensor]:
        """Two reusable ``(2, 2^N)`` buffers (state and adjoint stacked), kept between
        calls so the allocator's high-water mark does not grow step after step. With an
        ``owner`` (an autograd context) the pair is lent until the owner is freed: the
        forward's final state stays in it for the backward, and a second forward before
        that backward gets a pair of its own."""
        pool = self._work.setdefault((dtype, device), [])
        for entry in pool:
            if not entry[2]:
                break
        else:
            dim = 2**self.n_qubits
            entry = [torch.empty(2, dim, dtype=dtype, device=device), torch.empty(2, dim, dtype=dtype, device=device), False]
            pool.append(entry)
        if owner is not None:
            entry[2] = True
            weakref.finalize(owner, entry.__setitem__, 2, False)
        return entry[0], entry[1]

    def release_workspace(self) -> None:
        """Free the cached buffers (they are re-created on the next call)."""
        self._work.clear()


def supports_fast(ops: list[Op]) -> bool:
    """True when every gate is one the fast path handles (all of :data:`GATES`)."""
    return all(op.gate in GATES and (GATES[op.gate].n_wires == 1 or GATES[op.gate].controlled) for op in ops)


def default_block(n_qubits: int, real: bool = True) -> int:
    """Window width (wires per fused block): 5 for real circuits (32 x 32 real blocks),
    4 for complex ones (16 x 16 complex); measured best at N = 13 and N = 22 (see
    benchmarks/RESULTS.md)."""
    return 5 if real else 4


def _windows(n: int, g: int) -> list[tuple[int, int]]:
    """``(lo, width)`` windows covering ``0..n-1``, consecutive ones sharing one wire,
    widths as equal as possible (the wider ones last)."""
    if g >= n:
        return [(0, n)]
    if g == 1:
        return [(w, 1) for w in range(n)]
    count = -(-(n - 1) // (g - 1))
    base, extra = divmod(n - 1, count)
    out, lo = [], 0
    for i in range(count):
        step = base + (1 if i >= count - extra else 0)
        out.append((lo, step + 1))
        lo += step
    return out


def _schedule(ops: list[Op], n: int, g: int) -> list:
    """The fused steps (see the module docstring, point 1)."""
    windows = _windows(n, g)
    wire_ops: list[list[int]] = [[] for _ in range(n)]
    for i, op in enumerate(ops):
        for w in op.wires:
            wire_ops[w].append(i)
    ptr = [0] * n
    done = [False] * len(ops)
    steps: list = []

    def closure(lo: int, width: int) -> tuple[list[int], dict]:
        p = {w: ptr[w] for w in range(lo, lo + width)}
        head = lambda w: wire_ops[w][p[w]] if p[w] < len(wire_ops[w]) else -1
        entangled: set = set()
        taken: list[int] = []
        changed = True
        while changed:
            changed = False
            for w in range(lo, lo + width):
                while True:
                    i = head(w)
                    if i < 0:
                        break
                    wires = ops[i].wires
                    if any(not lo <= x < lo + width for x in wires) or any(head(x) != i for x in wires):
                        break
                    if len(wires) == 1 and w in entangled:  # keeps blocks of every layer alike
                        break
                    for x in wires:
                        p[x] += 1
                    if len(wires) > 1:
                        entangled.update(wires)
                    taken.append(i)
                    changed = True
        return taken, p

    first = 0
    while first < len(ops):
        if done[first]:
            first += 1
            continue
        op = ops[first]
        lo_w, hi_w = min(op.wires), max(op.wires)
        cands = [(lo, width) for lo, width in windows if lo <= lo_w and hi_w < lo + width]
        if not cands:  # a two-qubit gate wider than any window
            spec = GATES[op.gate]
            c, t = op.wires
            if spec.kind == "permutation":
                steps.append(_Fixed2("X", c, t))
            elif spec.kind == "diagonal":
                steps.append(_Fixed2("Z", c, t))
            else:
                steps.append(_Ctrl(c, t, op))
            for w in op.wires:
                ptr[w] += 1
            done[first] = True
            continue
        best = None
        for lo, width in cands:
            taken, p = closure(lo, width)
            if best is None or len(taken) > len(best[2]):
                best = (lo, width, taken, p)
        lo, width, taken, p = best
        ptr[lo : lo + width] = [p[w] for w in range(lo, lo + width)]
        lead: list = [None] * width
        tail: list = []
        seen: set = set()
        for i in taken:
            done[i] = True
            o = ops[i]
            if len(o.wires) == 1 and o.wires[0] not in seen:
                lead[o.wires[0] - lo] = o
            else:
                tail.append(o)
            seen.update(o.wires)
        steps.append(_Block(lo, width, lead, tail))
    return steps


def compile_fast(ops: list[Op], n_qubits: int, n_weights: int, *, max_block: int | None = None) -> FastProgram:
    """Fuse a (validated) op list into a :class:`FastProgram` (windows of at most
    ``max_block`` wires; see the module docstring)."""
    n = n_qubits
    real = all(GATES[op.gate].real for op in ops)
    g_max = max(1, min(max_block or default_block(n, real), n))
    steps = _schedule(ops, n, g_max)

    # every 2x2 matrix gets a row in one batch: the parametric gates' (type by type), then
    # one row per fixed gate (a controlled gate's target matrix) and the identity
    param_lists: dict[str, list] = {}
    local: dict[int, int] = {}
    for op in ops:
        if GATES[op.gate].n_params:
            lst = param_lists.setdefault(op.gate, [])
            local[id(op)] = len(lst)
            lst.append(list(op.params))
    param_index = {g: torch.tensor(v, dtype=torch.long) for g, v in param_lists.items()}
    offset, total = {}, 0
    for g, v in param_lists.items():
        offset[g], total = total, total + len(v)
    fixed: set = set()
    for s in steps:
        if isinstance(s, _Block):
            fixed.update(op.gate for op in s.tail if op.gate not in offset)
            fixed.update(op.gate if op is not None else _IDENTITY for op in s.lead if op is None or op.gate not in offset)
    fixed_names = sorted(fixed)

    def row(op: Op | None) -> int:
        if op is None:
            return total + fixed_names.index(_IDENTITY)
        if op.gate in offset:
            return offset[op.gate] + local[id(op)]
        return total + fixed_names.index(op.gate)

    classes: dict[tuple, _Class] = {}
    ctrl_rows: list[int] = []
    for s in steps:
        if isinstance(s, _Block):
            tail = tuple(tuple(w - s.lo for w in op.wires) for op in s.tail)
            fixed_tail = bool(s.tail) and all(op.gate not in offset for op in s.tail)
            key = (s.g, tail, tuple(op.gate for op in s.tail) if fixed_tail else None)
            if key not in classes:
                classes[key] = _Class(s.g, tail, [], fixed_tail, len(classes))
            c = classes[key]
            s.tid, s.k = c.tid, len(c.op_rows)
            c.op_rows.append([row(op) for op in s.lead] + [row(op) for op in s.tail])
        elif isinstance(s, _Ctrl):
            s.k = len(ctrl_rows)
            ctrl_rows.append(row(s.op))
    class_list = list(classes.values())
    for c in class_list:
        c.op_rows = torch.tensor(c.op_rows, dtype=torch.long)
    for s in steps:
        if isinstance(s, _Ctrl):
            s.tid = len(class_list)
    ctrl = torch.tensor(ctrl_rows, dtype=torch.long) if ctrl_rows else None
    return FastProgram(n, n_weights, real, steps, param_index, fixed_names, class_list, ctrl, len(ops), g_max,
                       _kernel.match(ops, n))


# --- step 2: matrices (ordinary autograd) --------------------------------------------


def _fixed(gate: str, dtype: torch.dtype, device) -> Tensor:
    if gate == _IDENTITY:
        m = ((1, 0), (0, 1))
    else:
        spec = GATES[gate]
        m = spec.fixed if spec.fixed is not None else _FIXED_2Q[gate]
    t = torch.tensor(m, dtype=torch.complex128)
    return (t.real if not dtype.is_complex else t).to(dtype=dtype, device=device)


def _kron_index(g: int, perm: Tensor | None, device) -> Tensor:
    """Where each entry of the ``2^g x 2^g`` Kronecker product (rows taken at ``perm``) sits
    in the outer product of the factors' flattened ``(i_w, j_w)`` pairs, row-major."""
    d = 2**g
    r = (torch.arange(d) if perm is None else perm.cpu())[:, None]
    c = torch.arange(d)[None, :]
    idx = torch.zeros(d, d, dtype=torch.long)
    for w in range(g):  # factor w: bit g-1-w of the row and of the column, digit g-1-w in base 4
        shift = g - 1 - w
        idx += (2 * ((r >> shift) & 1) + ((c >> shift) & 1)) * 4**shift
    return idx.reshape(-1).to(device)


class _Kron(torch.autograd.Function):
    """Batched Kronecker product of ``g`` 2x2 factors, ``(K, g, 2, 2) -> (K, 2^g, 2^g)``,
    with a fixed row gather folded in.

    Built as the outer product of the factors' 4-vectors (``g - 1`` broadcast products)
    and one gather into matrix order; the backward is one gather back and two small
    batched products per factor (contracting the outer product with the other factors,
    swept from the left and reusing the forward's right partial products). Autograd
    through chained broadcast products instead spends a multiply and a reduction over
    the whole ``(K, 2^g, 2^g)`` product per factor and operand."""

    @staticmethod
    def forward(ctx, f: Tensor, idx: Tensor, inv: Tensor) -> Tensor:
        k, g = f.shape[0], f.shape[1]
        a = f.reshape(k, g, 4)
        right = [a[:, g - 1]]  # right[j]: the outer product of factors g-1-j..g-1
        for w in range(g - 2, -1, -1):
            right.append((a[:, w, :, None] * right[-1][:, None, :]).reshape(k, -1))
        ctx.save_for_backward(a, inv, *right[:-1])
        return right[-1].index_select(1, idx).view(k, 2**g, 2**g)

    @staticmethod
    @torch.autograd.function.once_differentiable  # saves detached partial products
    def backward(ctx, grad: Tensor):
        a, inv, *right = ctx.saved_tensors
        k, g = a.shape[0], a.shape[1]
        if a.is_complex():  # grad of x * y w.r.t. x is grad * conj(y)
            a, right = a.conj(), [r.conj() for r in right]
        left = grad.reshape(k, -1).index_select(1, inv)  # the outer product's gradient
        out = []
        for w in range(g - 1):  # left: the gradient contracted with factors 0..w-1
            lv = left.view(k, 4, -1)
            out.append(torch.bmm(right[g - 2 - w][:, None, :], lv.mT))  # row form: faster than lv @ column
            left = torch.bmm(a[:, w, None, :], lv)
        out.append(left)
        return torch.cat(out, 1).view(k, g, 2, 2), None, None


def _apply_to_matrix(m: Tensor, u: Tensor, g: int, op_wires: tuple, controlled: bool) -> Tensor:
    """``E(u) @ m`` for a batch of ``(K, 2^g, C)`` matrices, ``u`` ``(K, 2, 2)``."""
    k, d, cols = m.shape
    if not controlled:
        (w,) = op_wires
        view = m.reshape(k, 2**w, 2, (2 ** (g - 1 - w)) * cols)
        return torch.matmul(u[:, None], view).reshape(k, d, cols)
    c, t = op_wires
    if t == c + 1:  # adjacent: one product with the 4x4 block-diag(I, u), no slicing
        eye, zero = torch.eye(2, dtype=u.dtype, device=u.device).expand(k, 2, 2), u.new_zeros(k, 2, 2)
        full = torch.cat([torch.cat([eye, zero], 2), torch.cat([zero, u], 2)], 1)  # (K, 4, 4)
        view = m.reshape(k, 2**c, 4, (2 ** (g - 2 - c)) * cols)
        return torch.matmul(full[:, None], view).reshape(k, d, cols)
    view = m.reshape(k, 2**c, 2, (2 ** (g - 1 - c)) * cols)
    off, on = view[:, :, 0], view[:, :, 1]  # (K, 2^c, R)
    if t > c:
        on = on.reshape(k, 2**c * 2 ** (t - c - 1), 2, 2 ** (g - 1 - t) * cols)
    else:
        on = on.reshape(k, 2**t, 2, 2 ** (c - 1 - t) * 2 ** (g - 1 - c) * cols)
    on = torch.matmul(u[:, None], on)
    return torch.stack([off, on.reshape(off.shape)], 2).reshape(k, d, cols)


def _u3(angles: Tensor) -> Tensor:
    """:func:`qtrain.circuits.gates.u3` in real arithmetic, joined by one ``torch.complex``
    (its backward is two views; a real-to-complex ``.to`` costs far more there)."""
    theta, phi, lam = angles.unbind(-1)
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    both = phi + lam
    zero = torch.zeros_like(c)
    re = torch.stack([c, -torch.cos(lam) * s, torch.cos(phi) * s, torch.cos(both) * c], -1)
    im = torch.stack([zero, -torch.sin(lam) * s, torch.sin(phi) * s, torch.sin(both) * c], -1)
    return torch.complex(re, im).view(*c.shape, 2, 2)


class _RY(torch.autograd.Function):
    """:func:`qtrain.circuits.gates.ry`, ``(n,) -> (n, 2, 2)``, with its derivative in closed
    form (autograd through the cosines, sines and stacks takes several times the operations)."""

    @staticmethod
    def forward(ctx, theta: Tensor) -> Tensor:
        half = theta / 2
        c, s = torch.cos(half), torch.sin(half)
        ctx.save_for_backward(c, s)
        return torch.stack([c, -s, s, c], -1).view(-1, 2, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        c, s = ctx.saved_tensors
        g = grad.reshape(-1, 4)  # d/dtheta of (c, -s, s, c) is (-s, -c, c, -s) / 2
        return (c * (g[:, 2] - g[:, 1]) - s * (g[:, 0] + g[:, 3])) / 2


_BUILDERS = {  # same matrices as GATES[...].matrix, cheaper to differentiate
    "U3": _u3,
    "CU3": _u3,
    "RY": lambda a: _RY.apply(a[:, 0]),
    "CRY": lambda a: _RY.apply(a[:, 0]),
}


def _tail_matrix(prog: FastProgram, c: _Class, allm: Tensor) -> tuple[Tensor, Tensor | None]:
    """A class's fixed tail (CNOTs, CZs, X: a signed permutation) as ``(perm, signs)``:
    ``T @ m == signs * m[:, perm]`` (``signs`` None when all +1). Cached per dtype/device.
    A tail with any other fixed gate is a dense constant: ``perm`` is then that matrix."""
    key = ("tail", c.tid, allm.dtype, allm.device)
    if key not in prog._work:
        d = 2**c.g
        m = torch.eye(d, dtype=allm.dtype, device=allm.device)[None]
        with torch.no_grad():
            for j, w in enumerate(c.tail):
                u = allm[c.op_rows[0, c.g + j]].detach()[None]
                m = _apply_to_matrix(m, u, c.g, w, len(w) == 2)
        t = m[0]
        nz = t != 0
        if bool((nz.sum(1) == 1).all()) and bool((t[nz].abs() == 1).all()):
            perm = nz.to(torch.int64).argmax(1)
            signs = t.gather(1, perm[:, None])  # (d, 1)
            prog._work[key] = (perm, None if bool((signs == 1).all()) else signs)
        else:
            prog._work[key] = (t, "dense")
    return prog._work[key]


def build_matrices(prog: FastProgram, weights: Tensor) -> list[Tensor]:
    """Every block's and standalone controlled gate's matrix, differentiably in ``weights``.

    Returns:
        One tensor per block class ``(K, 2^g, 2^g)``, then (if any) one ``(K, 2, 2)``
        of the standalone controlled gates' target matrices, in the state's dtype.
    """
    flat = weights.reshape(-1)
    sdtype = flat.dtype if prog.real else (torch.complex128 if flat.dtype == torch.float64 else torch.complex64)
    dev = flat.device
    mats = [
        _BUILDERS.get(g, GATES[g].matrix)(flat[idx]).to(sdtype)
        for g, idx in prog.param_index.items()
    ]
    if prog.fixed_names:
        key = ("fixed", sdtype, dev)
        if key not in prog._work:
            prog._work[key] = torch.stack([_fixed(g, sdtype, dev) for g in prog.fixed_names])
        mats.append(prog._work[key])
    allm = torch.cat(mats) if len(mats) > 1 else mats[0]  # (rows, 2, 2)
    out = []
    for c in prog.classes:
        tail, signs = _tail_matrix(prog, c, allm) if c.fixed_tail else (None, None)
        dense = isinstance(signs, str)
        key = ("kron", c.tid, dev)
        if key not in prog._work:  # a permutation tail is folded into the product's gather
            idx = _kron_index(c.g, None if dense else tail, dev)
            prog._work[key] = (idx, torch.argsort(idx))
        if c.fixed_tail:
            m = _Kron.apply(allm[c.op_rows[:, : c.g]], *prog._work[key])  # one gather per class
            if dense:
                m = torch.matmul(tail, m)
            elif signs is not None:
                m = m * signs
        else:
            sel = allm[c.op_rows]  # g + tail of (K, 2, 2): one gather per class
            m = _Kron.apply(sel[:, : c.g], *prog._work[key])
            for j, (w, u) in enumerate(zip(c.tail, sel[:, c.g :].unbind(1))):
                m = _apply_to_matrix(m, u, c.g, w, len(w) == 2)
        out.append(m)
    if prog.ctrl is not None:
        out.append(allm[prog.ctrl])
    return out


# --- step 3: amplitudes ----------------------------------------------------------------


def _block_views(x: Tensor, n: int, lo: int, g: int) -> tuple[Tensor, int, int, int]:
    s = x.shape[0]
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    return x.view(s * a, d, b), a, d, b


def _apply_block(x: Tensor, y: Tensor, u: Tensor, n: int, lo: int, g: int) -> None:
    """``y = (I (x) u (x) I) x`` on wires ``lo..lo+g-1``, for each stacked row of ``x``."""
    xv, _, d, b = _block_views(x, n, lo, g)
    yv = y.view(xv.shape)
    if b == 1:
        torch.matmul(xv.view(-1, d), u.mT, out=yv.view(-1, d))
    else:
        torch.matmul(u, xv, out=yv)


def _block_out(x: Tensor, u: Tensor, n: int, lo: int, g: int) -> Tensor:
    """Out of place (autograd) version of :func:`_apply_block` for one flat state."""
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    if b == 1:
        return (x.view(a, d) @ u.mT).reshape(-1)
    if a == 1:
        return (u @ x.view(d, b)).reshape(-1)
    return torch.matmul(u, x.view(a, d, b)).reshape(-1)


_GRAD_CHUNK = 2**17  # elements per partial product of a block gradient (stays in cache)
_GRAD_CHUNK_GPU = 2**24  # on a GPU the cost is kernel launches: a few large partial products


def _grad_chunk(x: Tensor) -> int:
    return _GRAD_CHUNK_GPU if x.is_cuda else _GRAD_CHUNK


def _block_grad(lam: Tensor, psi: Tensor, n: int, lo: int, g: int) -> Tensor:
    """``sum over the other wires of lam psi^H`` -> ``(2^g, 2^g)`` (lam, psi flat).

    One GEMM over the whole state when the window is the first wires. A real middle
    window: ``(2^g, b) x (b, 2^g)`` products batched over slabs of the leading wires, each
    slab's partials summed right away. Otherwise (the last wires, or complex states, where
    a conjugated batched operand would be materialised whole) a sum of GEMMs over chunks
    of the leading wires, each chunk's ``(2^g, rest)`` operands transposed in cache."""
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    lv, pv = lam.view(a, d, b), psi.view(a, d, b).conj()
    if a == 1:
        return lv.view(d, b) @ pv.view(d, b).mT
    if b > 1 and not lam.is_complex():
        # no transposed copies; with one thread a slab's (rows, d, d) partials stay in cache
        # (N = 22: 2.0 / 2.8 / 4.5 ms instead of 4.5 / 5.8 / 7.9 ms for lo = 6, 9, 13)
        rows = max(1, _grad_chunk(lam) // (d * d))
        if torch.get_num_threads() > 1 and not lam.is_cuda:
            rows = max(rows, a // 4)
        out = None
        for i in range(0, a, rows):
            part = torch.bmm(lv[i : i + rows], pv[i : i + rows].mT).sum(0)
            out = part if out is None else out.add_(part)
        return out
    rows = max(1, _grad_chunk(lam) // (d * b))
    if torch.get_num_threads() > 1 and not lam.is_cuda:  # each product is a parallel region: keep them few
        rows = max(rows, a // 4)
    out = None
    for i in range(0, a, rows):
        lc, pc = lv[i : i + rows], pv[i : i + rows]
        if b == 1:
            part = lc.reshape(-1, d).mT @ pc.reshape(-1, d)
        else:
            part = lc.transpose(0, 1).reshape(d, -1) @ pc.transpose(0, 1).reshape(d, -1).mT
        out = part if out is None else out.add_(part)
    return out


def _ctrl_view(x: Tensor, n: int, c: int, t: int) -> tuple[Tensor, str]:
    """The control=1 part of each stacked row, with the target as a named einsum axis."""
    s = x.shape[0]
    if c < t:
        v = x.view(s, 2**c, 2, 2 ** (t - c - 1), 2, 2 ** (n - 1 - t))[:, :, 1]  # (s, A, M, 2, B)
        return v, "samjb"
    v = x.view(s, 2**t, 2, 2 ** (c - t - 1), 2, 2 ** (n - 1 - c))[:, :, :, :, 1]  # (s, A, 2, M, B)
    return v, "sajmb"


def _apply_ctrl(x: Tensor, u: Tensor, n: int, c: int, t: int) -> None:
    """In place: ``u`` on the target wherever the control reads 1, as multiply-adds of the two
    (strided) target halves: a product reads them through copies (an ``einsum`` here held
    permuted copies of both; with the adjoint's gradient change, u3-cu3-ring at N = 22 now
    peaks 64 MiB lower)."""
    v, sub = _ctrl_view(x, n, c, t)
    axis = sub.index("j")
    v0, v1 = v.select(axis, 0), v.select(axis, 1)
    u00, u01, u10, u11 = u.reshape(4).unbind()
    new1 = torch.mul(v0, u10).addcmul_(v1, u11)
    v0.mul_(u00).addcmul_(v1, u01)
    v1.copy_(new1)


def _apply_fixed2(x: Tensor, kind: str, n: int, c: int, t: int) -> None:
    """In place: a CNOT (swap the target's halves) or CZ (negate) where the control reads 1."""
    v, sub = _ctrl_view(x, n, c, t)
    axis = sub.index("j")
    one = v.select(axis, 1)
    if kind == "Z":
        one.neg_()
    else:
        zero = v.select(axis, 0)
        tmp = one.clone()
        one.copy_(zero)
        zero.copy_(tmp)


class _CtrlStep(torch.autograd.Function):
    """One controlled gate (or a fixed CNOT / CZ when ``u`` is None) on a flat state, out of
    place, with the adjoint rules of :class:`_AdjointProbs` as its backward (the autograd
    path's version: no slicing, whose backward would zero-fill whole states)."""

    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor | None, n: int, c: int, t: int, kind: str) -> Tensor:
        y = x.clone()
        if u is None:
            _apply_fixed2(y[None], kind, n, c, t)
        else:
            _apply_ctrl(y[None], u, n, c, t)
        ctx.args = (n, c, t, kind)
        if u is not None and ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, u)
        elif u is not None:
            ctx.save_for_backward(u)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        n, c, t, kind = ctx.args
        gx = grad.clone()
        if kind != "U":
            _apply_fixed2(gx[None], kind, n, c, t)  # self-inverse
            return gx, None, None, None, None, None
        if ctx.needs_input_grad[1]:
            x, u = ctx.saved_tensors
        else:
            (u,) = ctx.saved_tensors
        _apply_ctrl(gx[None], u.mH, n, c, t)
        gu = None
        if ctx.needs_input_grad[1]:
            lam, sub = _ctrl_view(grad[None], n, c, t)
            psi, _ = _ctrl_view(x[None], n, c, t)
            gu = torch.einsum(f"{sub.replace('j', 'i')},{sub}->ij", lam, psi.conj())
        return gx, gu, None, None, None, None


def _run_forward(prog: FastProgram, mats: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Apply every step to the state in ``x`` (shape ``(1, 2^N)``), ping-ponging with ``y``;
    returns whichever holds the result."""
    n = prog.n_qubits
    for s in prog.steps:
        if isinstance(s, _Block):
            _apply_block(x, y, mats[s.tid][s.k], n, s.lo, s.g)
            x, y = y, x
        elif isinstance(s, _Fixed2):
            _apply_fixed2(x, s.kind, n, s.control, s.target)
        else:
            _apply_ctrl(x, mats[s.tid][s.k], n, s.control, s.target)
    return x


def _autograd_state(prog: FastProgram, mats: list[Tensor], dtype: torch.dtype, device) -> Tensor:
    """The final state, every step out of place (autograd differentiates it)."""
    n = prog.n_qubits
    x = torch.zeros(2**n, dtype=dtype, device=device)
    x[0].fill_(1)  # fill_, not item assignment: that copies a host scalar and waits for a GPU
    rows = [m.unbind(0) for m in mats]  # one UnbindBackward per class, not one zero-filled select each
    for s in prog.steps:
        if isinstance(s, _Block):
            x = _block_out(x, rows[s.tid][s.k], n, s.lo, s.g)
        elif isinstance(s, _Fixed2):
            x = _CtrlStep.apply(x, None, n, s.control, s.target, s.kind)
        else:
            x = _CtrlStep.apply(x, rows[s.tid][s.k], n, s.control, s.target, "U")
    return x


def _probs(psi: Tensor) -> Tensor:
    return torch.view_as_real(psi).square().sum(-1) if psi.is_complex() else psi.square()


def _first_derivatives_only() -> None:
    """The hand-written backwards compute first derivatives only: refuse a
    ``create_graph=True`` backward with a clear message."""
    if torch.is_grad_enabled():
        raise RuntimeError("the fast simulator's backward gives first derivatives only; build the QNN with "
                           "method='autograd' for higher-order derivatives")


class _AdjointProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prog: FastProgram, *mats: Tensor) -> Tensor:
        ref = mats[0]
        x, y = prog.workspace(ref.dtype, ref.device, owner=ctx)
        x[0].zero_()
        x[0, 0].fill_(1)
        out = _run_forward(prog, mats, x[:1], y[:1])
        # the final state psi (the only one kept for the backward) stays in the lent buffer
        ctx.prog, ctx.pair = prog, (x, y)
        ctx.bufs = (x, y) if out.data_ptr() == x.data_ptr() else (y, x)
        ctx.save_for_backward(*mats)
        return _probs(out[0])

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        _first_derivatives_only()
        prog: FastProgram = ctx.prog
        mats = ctx.saved_tensors
        n = prog.n_qubits
        x, y = ctx.bufs  # x[0] holds psi, unless an earlier backward (retain_graph) un-computed it
        if getattr(ctx, "consumed", False):
            a, b = ctx.pair
            a[0].zero_()
            a[0, 0].fill_(1)
            _run_forward(prog, mats, a[:1], b[:1])  # as the forward did: ends in x
        ctx.consumed = True
        if x.is_complex():  # lambda = dL/dpsi = 2 grad_p psi, without a complex copy of grad_p
            torch.mul(torch.view_as_real(x[0]), grad_p[:, None], out=torch.view_as_real(x[1]))
        else:
            torch.mul(x[0], grad_p, out=x[1])
        x[1].mul_(2)
        grads = [torch.zeros_like(m) if ctx.needs_input_grad[i + 1] else None for i, m in enumerate(mats)]
        mats_h = [m.mH.resolve_conj() for m in mats]  # one conjugation per class, not per block
        for s in reversed(prog.steps):
            if isinstance(s, _Block):
                _apply_block(x, y, mats_h[s.tid][s.k], n, s.lo, s.g)  # y = [psi_before, lambda_before]
                if grads[s.tid] is not None:
                    grads[s.tid][s.k] += _block_grad(x[1], y[0], n, s.lo, s.g)
                x, y = y, x
            elif isinstance(s, _Fixed2):
                _apply_fixed2(x, s.kind, n, s.control, s.target)  # its own inverse
            else:
                if grads[s.tid] is not None:  # lam_after psi_before^H = (lam_after psi_after^H) u: no copy of lambda
                    lam, sub = _ctrl_view(x[1:], n, s.control, s.target)
                    psi, _ = _ctrl_view(x[:1], n, s.control, s.target)
                    outer = torch.einsum(f"{sub.replace('j', 'i')},{sub}->ij", lam, psi.conj())
                    grads[s.tid][s.k] += outer @ mats[s.tid][s.k]
                _apply_ctrl(x, mats_h[s.tid][s.k], n, s.control, s.target)  # un-compute psi, propagate lambda
        return (None, *grads)


def _grad_batch(lam: Tensor, psi: Tensor, n: int, lo: int, g: int) -> Tensor:
    """:func:`_block_grad` for ``K`` stacked pairs: ``(K, 2^N), (K, 2^N) -> (K, 2^g, 2^g)``."""
    k = lam.shape[0]
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    if b == 1:  # conj(L^H P): both operands in BLAS-native (conj-)transposed form
        return torch.bmm(lam.view(k, a, d).mH, psi.view(k, a, d)).conj()
    if a == 1:
        return torch.bmm(lam.view(k, d, b), psi.view(k, d, b).mH)
    if d <= b:  # (K, a, d, d) partial products take no more room than the states
        return torch.matmul(lam.view(k, a, d, b), psi.view(k, a, d, b).mH).sum(1)
    if not lam.is_complex():  # one transposed copy of each operand (einsum's is slower here)
        lt = lam.view(k, a, d, b).transpose(1, 2).reshape(k, d, a * b)
        return torch.bmm(lt, psi.view(k, a, d, b).transpose(1, 2).reshape(k, d, a * b).mT)
    return torch.einsum("kadb,kaeb->kde", lam.view(k, a, d, b), psi.conj().view(k, a, d, b))


def _fixed2_table(prog: FastProgram, s: _Fixed2, dtype: torch.dtype, device) -> Tensor:
    """A CNOT as a gather index / a CZ as a +-1 vector over all 2^N amplitudes (cached; only
    the stored path, N <= :data:`AUTOGRAD_MAX_N`, uses these)."""
    real = dtype.to_real() if dtype.is_complex else dtype
    key = ("table", s.kind, s.control, s.target, real, device)
    if key not in prog._work:
        n = prog.n_qubits
        i = torch.arange(2**n, device=device)
        bc, bt = (i >> (n - 1 - s.control)) & 1, (i >> (n - 1 - s.target)) & 1
        prog._work[key] = i ^ (bc << (n - 1 - s.target)) if s.kind == "X" else (1 - 2 * (bc & bt)).to(real)
    return prog._work[key]


def _stored_plan(prog: FastProgram, ref: Tensor) -> dict:
    """Buffers and pre-sliced views for :class:`_StoredProbs`, from a pool: an entry is lent
    until the autograd node that uses it is freed. Reusing the buffers and their views
    keeps both page faults and per-step Python work off the critical path."""
    pool = prog._work.setdefault(("stored", ref.dtype, ref.device), [])
    for entry in pool:
        if not entry["busy"]:
            return entry
    n, rows = prog.n_qubits, len(prog.steps) + 1
    states = torch.empty(rows, 2**n, dtype=ref.dtype, device=ref.device)
    lams = torch.empty_like(states)

    def views(buf: Tensor, i: int, s) -> tuple:
        x, y = buf[i], buf[i + 1]
        if isinstance(s, _Block):
            a, d, b = 2**s.lo, 2**s.g, 2 ** (n - s.lo - s.g)
            if b == 1:
                return "R", x.view(a, d), y.view(a, d)
            if a > 1:
                return "B", x.view(a, d, b), y.view(a, d, b)
            return "L", x.view(d, b), y.view(d, b)
        if isinstance(s, _Fixed2):
            return ("P" if s.kind == "X" else "S"), x, y
        return "C", x, y

    fwd, bwd = [], []
    for i, s in enumerate(prog.steps):
        code, x, y = views(states, i, s)
        extra = _fixed2_table(prog, s, ref.dtype, ref.device) if isinstance(s, _Fixed2) else None
        fwd.append((code, s, x, y, extra))
        code, x, y = views(lams, i, s)
        bwd.append((code, s, y, x, extra))  # lambda flows from slot i + 1 to slot i
    first = next(i for i, s in enumerate(prog.steps) if not isinstance(s, _Fixed2))
    bwd = bwd[first + 1 :][::-1] + ([bwd[first]] if isinstance(prog.steps[first], _Ctrl) else [])
    groups: dict[tuple, list] = {}
    for i, s in enumerate(prog.steps):
        if isinstance(s, _Block):
            groups.setdefault((s.tid, s.lo, s.g), []).append((s.k, i))
    grads = []
    for (tid, lo, g), it in groups.items():
        ks = torch.tensor([k for k, _ in it], device=ref.device)
        at = [i for _, i in it]
        steps = {q - p for p, q in itertools.pairwise(at)}
        if len(steps) <= 1 and (not steps or min(steps) > 0):  # evenly spaced: strided views, no copies
            step = steps.pop() if steps else 1
            sel = slice(at[0], at[-1] + 1, step)
            grads.append((tid, lo, g, ks, states[sel], lams[at[0] + 1 : at[-1] + 2 : step]))
        else:
            idx = torch.tensor(at, device=ref.device)
            grads.append((tid, lo, g, ks, idx, None))
    entry = {"busy": False, "states": states, "lams": lams, "fwd": fwd, "bwd": bwd, "grads": grads}
    pool.append(entry)
    return entry


def _run_plan(ops: list, rows: list) -> None:
    for code, s, x, y, extra in ops:
        if code == "L":
            torch.mm(rows[s.tid][s.k], x, out=y)
        elif code == "B":  # matmul's dispatch to this same bmm costs ~1.5 us a step more
            torch.bmm(rows[s.tid][s.k].expand(x.shape[0], -1, -1), x, out=y)
        elif code == "R":
            torch.mm(x, rows[s.tid][s.k].mT, out=y)
        elif code == "P":
            torch.index_select(x, 0, extra, out=y)
        elif code == "S":
            torch.mul(x, extra, out=y)
        else:
            y.copy_(x)
            n = y.numel().bit_length() - 1
            _apply_ctrl(y[None], rows[s.tid][s.k], n, s.control, s.target)


class _StoredProbs(torch.autograd.Function):
    """Small circuits: the forward keeps the state before every step (``steps x 2^N``;
    long-range CNOTs / CZs become one gather / multiply into the next slot); the backward
    propagates ``lambda`` once through the steps (no un-computing) and forms the block
    gradients ``lambda_after psi_before^H`` afterwards, in one batched product per block
    position (not one per block)."""

    @staticmethod
    def forward(ctx, prog: FastProgram, *mats: Tensor) -> Tensor:
        plan = _stored_plan(prog, mats[0])
        plan["busy"] = True
        weakref.finalize(ctx, plan.__setitem__, "busy", False)
        states = plan["states"]
        states[0].zero_()
        states[0, 0].fill_(1)  # fill_: item assignment would copy a host scalar and wait for a GPU
        _run_plan(plan["fwd"], [m.unbind(0) for m in mats])
        ctx.prog, ctx.plan = prog, plan
        ctx.save_for_backward(*mats)
        return _probs(states[-1])

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        _first_derivatives_only()
        prog, plan = ctx.prog, ctx.plan
        mats = ctx.saved_tensors
        n = prog.n_qubits
        states, lams = plan["states"], plan["lams"]
        torch.mul(states[-1], grad_p.to(states.dtype), out=lams[-1])
        lams[-1].mul_(2)
        _run_plan(plan["bwd"], [m.mH.resolve_conj().unbind(0) for m in mats])  # one conjugation per class
        grads: list = [torch.zeros_like(m) if ctx.needs_input_grad[i + 1] else None for i, m in enumerate(mats)]
        for tid, lo, g, ks, psi, lam in plan["grads"]:
            if grads[tid] is not None:
                if lam is None:  # psi holds the slots' indices
                    psi, lam = states.index_select(0, psi), lams.index_select(0, psi + 1)
                grads[tid].index_add_(0, ks, _grad_batch(lam, psi, n, lo, g))
        for i, s in enumerate(prog.steps):  # controlled gates: lambda_after psi_before^H on the control half
            if isinstance(s, _Ctrl) and grads[s.tid] is not None:
                lam, sub = _ctrl_view(lams[i + 1 : i + 2], n, s.control, s.target)
                psi, _ = _ctrl_view(states[i : i + 1], n, s.control, s.target)
                grads[s.tid][s.k] += torch.einsum(f"{sub.replace('j', 'i')},{sub}->ij", lam, psi.conj())
        return (None, *grads)


def _state_dtype(prog: FastProgram, flat: Tensor) -> torch.dtype:
    if prog.real:
        return flat.dtype
    return torch.complex128 if flat.dtype == torch.float64 else torch.complex64


def _use_autograd(prog: FastProgram, dtype: torch.dtype) -> bool:
    if prog.n_qubits > AUTOGRAD_MAX_N:
        return False
    kept = 2 * (len(prog.steps) + 1) * 2**prog.n_qubits * torch.empty((), dtype=dtype).element_size()  # states + lambdas
    return kept <= _AUTOGRAD_MAX_BYTES


_METHODS = ("auto", "kernel", "stored", "adjoint", "autograd")


def uses_kernel(prog: FastProgram, weights: Tensor) -> bool:
    """True when ``method="auto"`` runs ``prog`` at ``weights`` through a compiled kernel
    (:mod:`qtrain.circuits.kernel`): a matched circuit of a size it takes, CPU, float32 /
    float64, and the kernel built."""
    return _kernel.runs(prog.kernel, prog.n_qubits, weights.dtype, weights.device)


def fast_probabilities(prog: FastProgram, weights: Tensor, *, method: str = "auto") -> Tensor:
    """All ``2^N`` Born probabilities of ``prog`` at angles ``weights``, differentiable.

    Args:
        prog: from :func:`compile_fast`, on ``weights.device`` (see :meth:`FastProgram.to`).
        weights: the angles (any shape, flattened row-major).
        method: ``"auto"`` (the compiled kernel where :func:`uses_kernel`; else the
            stored backward for small circuits, see :data:`AUTOGRAD_MAX_N`, and the adjoint
            backward otherwise), ``"kernel"`` (raises where it cannot run), ``"stored"``,
            ``"adjoint"`` or ``"autograd"``. All give the same values and gradients to
            round-off.
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {list(_METHODS)}, got {method!r}")
    flat = weights.reshape(-1)
    if method == "kernel" or (method == "auto" and uses_kernel(prog, flat)):
        if prog.kernel is None:
            raise RuntimeError("this circuit is not one the compiled kernel runs (see qtrain.circuits.kernel.match)")
        return _kernel.kernel_probabilities(prog.kernel, prog.n_qubits, flat)
    dtype = _state_dtype(prog, flat)
    mats = build_matrices(prog, flat) if (prog.param_index or prog.fixed_names or prog.ctrl is not None) else []
    if not mats:  # no gate with a matrix: only CNOTs / CZs acting on |0...0>
        return _probs(_autograd_state(prog, mats, dtype, flat.device)) + 0 * flat.sum()  # keep the graph connected
    if method == "autograd":
        return _probs(_autograd_state(prog, mats, dtype, flat.device))
    grad = torch.is_grad_enabled() and any(m.requires_grad for m in mats)
    if method == "stored" or (method == "auto" and grad and _use_autograd(prog, dtype)):
        return _StoredProbs.apply(prog, *mats)
    return _AdjointProbs.apply(prog, *mats)
