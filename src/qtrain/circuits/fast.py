"""The fast simulator: fused gate blocks and an adjoint (un-computing) backward.

:mod:`qtrain.circuits.statevector` is the simple reference; this module computes the
same probabilities with far fewer, larger operations and O(2^N) memory:

1. **Fusion** (:func:`compile_fast`, once per circuit). The op list is packed into
   steps. Single-qubit gates and parametric controlled gates whose wires span at most
   ``max_block`` (default 5) consecutive wires are merged, commuting past steps on other
   wires, into a *block*: a ``2^g x 2^g`` matrix on wires ``lo..lo+g-1``, applied as
   one (batched) GEMM on the ``(2^lo, 2^g, 2^(N-lo-g))`` view of the state. Runs of
   CNOTs become one index permutation (one gather), runs of CZs one sign vector; both
   are shared by every layer that repeats them (int32 indices). A controlled rotation
   whose wires are too far apart (a ring's wrap-around gate) is applied in place to
   the half of the state where its control reads 1.
2. **Matrices** (:func:`build_matrices`, every call, ordinary autograd). Each gate
   type's 2x2 matrices are built in one batched call; blocks with the same gate
   pattern are multiplied together in one batched Kronecker/product chain.
3. **Amplitudes** (:class:`_AdjointProbs`, a ``torch.autograd.Function``). The forward
   applies the steps to ``|0...0>`` and keeps only the final state ``psi``. The
   backward starts from ``lambda = 2 (dL/dp) psi`` and walks the steps in reverse,
   un-computing ``psi`` with the inverse (adjoint) of each step and propagating
   ``lambda`` with the same operation, both stacked in one ``(2, 2^N)`` buffer, and
   forms each block's matrix gradient ``dL/dU = lambda_after psi_before^H``;
   autograd then carries ``dL/dU`` through step 2 to the angles.

With PyTorch's convention for complex gradients (``grad = dL/dRe + i dL/dIm``), for
``y = U x``: ``grad_x = U^H grad_y`` and ``grad_U = grad_y x^H``; for ``p = |psi|^2``:
``grad_psi = 2 grad_p psi``. Un-computing relies on every step being unitary; in
float32 its round-off grows slowly with depth (measured in the tests against the
autograd reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ansatze import Op
from .gates import GATES

__all__ = ["FastProgram", "compile_fast", "build_matrices", "fast_probabilities", "supports_fast"]

_FIXED_2Q = {"CNOT": ((0, 1), (1, 0)), "CZ": ((1, 0), (0, -1))}  # target matrices


@dataclass
class _Block:
    lo: int  # first wire
    g: int  # number of wires
    tile: int | None = None  # single-qubit-only blocks stay inside one aligned tile
    ops: list[Op] = field(default_factory=list)
    tid: int = -1  # which matrix tensor
    k: int = -1  # row in it


@dataclass
class _Ctrl:
    control: int
    target: int
    op: Op
    tid: int = -1
    k: int = -1


@dataclass
class _Perm:
    wires: set
    ops: list[Op] = field(default_factory=list)
    index: Tensor | None = None  # new[i] = old[index[i]]  (int32, shared)
    inverse: Tensor | None = None  # old[i] = new[inverse[i]]


@dataclass
class _Diag:
    wires: set
    ops: list[Op] = field(default_factory=list)
    signs: Tensor | None = None  # new = old * signs  (+-1, shared)


@dataclass
class _Class:
    """Blocks sharing one gate pattern: their matrices are built in one batched chain."""

    g: int
    pattern: tuple  # ((gate, local wires), ...)
    op_rows: list  # (K, slots): each op's row in the one batch of 2x2 matrices
    tid: int = -1


@dataclass
class FastProgram:
    """A circuit compiled for :func:`fast_probabilities`.

    Attributes:
        n_qubits: N.
        n_weights: the flat angle count.
        real: True when every gate is real (real-dtype amplitudes).
        steps: ``_Block`` / ``_Ctrl`` / ``_Perm`` / ``_Diag`` in application order.
        param_index: gate name -> ``(count, n_params)`` long tensor of angle indices.
        classes: the block classes; ``ctrl_gates``: gate name per standalone-controlled
            matrix tensor.
    """

    n_qubits: int
    n_weights: int
    real: bool
    steps: list
    param_index: dict
    fixed_names: list  # fixed gates used in blocks: their rows follow the parametric ones
    classes: list
    ctrl: Tensor | None  # rows of the standalone controlled gates' target matrices
    n_ops: int
    _moved: dict = field(default_factory=dict, repr=False)
    _work: dict = field(default_factory=dict, repr=False)

    def to(self, device: torch.device) -> "FastProgram":
        """The same program with its index tensors on ``device`` (cached)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        if device not in self._moved:
            memo: dict[int, Tensor] = {}

            def mv(t):
                if t is None:
                    return None
                if id(t) not in memo:
                    memo[id(t)] = t.to(device)
                return memo[id(t)]

            steps = []
            for s in self.steps:
                if isinstance(s, _Perm):
                    s = _Perm(s.wires, s.ops, mv(s.index), mv(s.inverse))
                elif isinstance(s, _Diag):
                    s = _Diag(s.wires, s.ops, mv(s.signs))
                steps.append(s)
            self._moved[device] = FastProgram(
                self.n_qubits,
                self.n_weights,
                self.real,
                steps,
                {g: mv(i) for g, i in self.param_index.items()},
                self.fixed_names,
                [_Class(c.g, c.pattern, mv(c.op_rows), c.tid) for c in self.classes],
                mv(self.ctrl),
                self.n_ops,
            )
        return self._moved[device]

    def workspace(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """Two reusable ``(2, 2^N)`` buffers (state and adjoint stacked), kept between
        calls so the allocator's high-water mark does not grow step after step."""
        key = (dtype, device)
        if key not in self._work:
            dim = 2**self.n_qubits
            self._work[key] = (torch.empty(2, dim, dtype=dtype, device=device), torch.empty(2, dim, dtype=dtype, device=device))
        return self._work[key]

    def signs(self, step: "_Diag", dtype: torch.dtype) -> Tensor:
        """``step.signs`` in the state's real dtype (cached: one copy per shared vector)."""
        real = dtype.to_real() if dtype.is_complex else dtype
        key = (id(step.signs), real)
        if key not in self._work:
            self._work[key] = step.signs.to(real)
        return self._work[key]

    def release_workspace(self) -> None:
        """Free the cached buffers (they are re-created on the next call)."""
        self._work.clear()


def supports_fast(ops: list[Op]) -> bool:
    """True when every gate is one the fast path handles (all of :data:`GATES`)."""
    return all(op.gate in GATES and (GATES[op.gate].n_wires == 1 or GATES[op.gate].controlled) for op in ops)


def _bit(index: Tensor, n: int, wire: int) -> Tensor:
    return (index >> (n - 1 - wire)) & 1


def default_block(n_qubits: int) -> int:
    """Wires per fused block (a 16 x 16 matrix). Wider blocks (5-7 wires) were slower
    here at both N = 13 (matrix building dominates) and N = 22 (see benchmarks/RESULTS.md)."""
    return 4  # measured best at N = 13 and N = 22 (benchmarks/RESULTS.md)


def compile_fast(ops: list[Op], n_qubits: int, n_weights: int, *, max_block: int | None = None) -> FastProgram:
    """Fuse a (validated) op list into a :class:`FastProgram`.

    Each op is placed in the earliest-allowed compatible step: after the last step that
    touches one of its wires (it commutes with everything later), in a block whose wire
    span stays within ``max_block`` (the smallest resulting span wins), in a permutation
    or sign step of its kind, or in a new step. Blocks of single-qubit gates stay inside
    tiles of ``max_block`` wires aligned to the *last* wire, so a layer's blocks are one
    plain GEMM each (the last tile) or batched GEMMs whose inner size is at least the
    block's (never thousands of tiny products).
    """
    n = n_qubits
    g_max = max(1, min(max_block or default_block(n), n))
    tile_of = lambda w: (n - 1 - w) // g_max  # noqa: E731
    steps: list = []
    last = [-1] * n  # per wire: index of the last step touching it

    def touch(j, wires):
        for w in wires:
            last[w] = max(last[w], j)

    for op in ops:
        spec = GATES[op.gate]
        wires = op.wires
        lb = max(last[w] for w in wires)
        if spec.kind in ("permutation", "diagonal"):
            kind = _Perm if spec.kind == "permutation" else _Diag
            target = None
            for j in range(max(lb, 0), len(steps)):
                if isinstance(steps[j], kind) and j >= lb:
                    target = j
            if target is None:
                steps.append(kind(set()))
                target = len(steps) - 1
            steps[target].ops.append(op)
            steps[target].wires |= set(wires)
            touch(target, steps[target].wires)
            continue
        lo_w, hi_w = min(wires), max(wires)
        if hi_w - lo_w + 1 > g_max:  # a long-range controlled gate: in place on its half
            steps.append(_Ctrl(wires[0], wires[1], op))
            touch(len(steps) - 1, wires)
            continue
        one = len(wires) == 1
        best, best_span = None, None
        for j in range(max(lb, 0), len(steps)):
            s = steps[j]
            if isinstance(s, _Block) and not (one and s.tile is not None and s.tile != tile_of(wires[0])):
                lo, hi = min(s.lo, lo_w), max(s.lo + s.g - 1, hi_w)
                span = hi - lo + 1
                if span <= g_max and (best is None or span <= best_span):
                    best, best_span = j, span
        if best is None:
            steps.append(_Block(lo_w, hi_w - lo_w + 1, tile_of(lo_w) if one else None))
            best = len(steps) - 1
        s = steps[best]
        if not one:
            s.tile = None
        hi = max(s.lo + s.g - 1, hi_w)
        s.lo = min(s.lo, lo_w)
        s.g = hi - s.lo + 1
        s.ops.append(op)
        touch(best, range(s.lo, s.lo + s.g))

    # angle indices per parametric gate type; every 2x2 matrix gets a row in one batch:
    # the parametric gates' (type by type), then one row per fixed gate type
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
    fixed_names = sorted({op.gate for st in steps if isinstance(st, _Block) for op in st.ops if op.gate not in offset})

    def row(op: Op) -> int:
        if op.gate in offset:
            return offset[op.gate] + local[id(op)]
        return total + fixed_names.index(op.gate)

    classes: dict[tuple, _Class] = {}
    ctrl_rows: list[int] = []
    basis = torch.arange(2**n, dtype=torch.long)
    shared: dict[tuple, tuple] = {}
    for s in steps:
        if isinstance(s, _Block):
            key = (s.g, tuple((op.gate, tuple(w - s.lo for w in op.wires)) for op in s.ops))
            if key not in classes:
                classes[key] = _Class(s.g, key[1], [])
                classes[key].tid = len(classes) - 1
            c = classes[key]
            s.tid, s.k = c.tid, len(c.op_rows)
            c.op_rows.append([row(op) for op in s.ops])
        elif isinstance(s, _Ctrl):
            s.k = len(ctrl_rows)
            ctrl_rows.append(row(s.op))
        else:
            key = (type(s).__name__, tuple(op.wires for op in s.ops))
            if key not in shared:  # identical runs (every layer's ring) share one tensor
                if isinstance(s, _Perm):
                    perm = basis
                    for op in s.ops:
                        c, t = op.wires
                        perm = perm[basis ^ (_bit(basis, n, c) << (n - 1 - t))]
                    inv = torch.empty_like(perm)
                    inv[perm] = basis
                    shared[key] = (perm.to(torch.int32), inv.to(torch.int32))
                else:
                    signs = torch.ones(2**n, dtype=torch.int8)
                    for op in s.ops:
                        c, t = op.wires
                        signs = signs * (1 - 2 * (_bit(basis, n, c) & _bit(basis, n, t))).to(torch.int8)
                    shared[key] = (signs.to(torch.float64),)
            if isinstance(s, _Perm):
                s.index, s.inverse = shared[key]
            else:
                (s.signs,) = shared[key]
    class_list = list(classes.values())
    for c in class_list:
        c.op_rows = torch.tensor(c.op_rows, dtype=torch.long)
    for s in steps:
        if isinstance(s, _Ctrl):
            s.tid = len(class_list)
    ctrl = torch.tensor(ctrl_rows, dtype=torch.long) if ctrl_rows else None
    real = all(GATES[op.gate].real for op in ops)
    return FastProgram(n, n_weights, real, steps, param_index, fixed_names, class_list, ctrl, len(ops))


# --- step 2: matrices (ordinary autograd) --------------------------------------------


def _fixed(gate: str, dtype: torch.dtype, device) -> Tensor:
    spec = GATES[gate]
    m = spec.fixed if spec.fixed is not None else _FIXED_2Q[gate]
    t = torch.tensor(m, dtype=torch.complex128)
    return (t.real if not dtype.is_complex else t).to(dtype=dtype, device=device)


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """Batched Kronecker product ``(K, p, p), (K, q, q) -> (K, pq, pq)``."""
    k, p, q = a.shape[0], a.shape[1], b.shape[1]
    return (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(k, p * q, p * q)


def _apply_to_matrix(m: Tensor, u: Tensor, g: int, op_wires: tuple, controlled: bool) -> Tensor:
    """``E(u) @ m`` for a batch of ``(K, 2^g, 2^g)`` matrices, ``u`` ``(K, 2, 2)``."""
    k, d = m.shape[0], m.shape[1]
    if not controlled:
        (w,) = op_wires
        view = m.reshape(k, 2**w, 2, (2 ** (g - 1 - w)) * d)
        return torch.matmul(u[:, None], view).reshape(k, d, d)
    c, t = op_wires
    view = m.reshape(k, 2**c, 2, (2 ** (g - 1 - c)) * d)
    off, on = view[:, :, 0], view[:, :, 1]  # (K, 2^c, R)
    if t > c:
        on = on.reshape(k, 2**c * 2 ** (t - c - 1), 2, 2 ** (g - 1 - t) * d)
        on = torch.matmul(u[:, None], on)
    else:
        on = on.reshape(k, 2**t, 2, 2 ** (c - 1 - t) * 2 ** (g - 1 - c) * d)
        on = torch.matmul(u[:, None], on)
    return torch.stack([off, on.reshape(off.shape)], 2).reshape(k, d, d)


def build_matrices(prog: FastProgram, weights: Tensor) -> list[Tensor]:
    """Every block's and standalone controlled gate's matrix, differentiably in ``weights``.

    Returns:
        One tensor per block class ``(K, 2^g, 2^g)``, then one per standalone controlled
        gate type ``(K, 2, 2)`` (the target matrix), in the state's dtype.
    """
    flat = weights.reshape(-1)
    sdtype = flat.dtype if prog.real else (torch.complex128 if flat.dtype == torch.float64 else torch.complex64)
    dev = flat.device
    mats = [GATES[g].matrix(flat[idx]).to(sdtype) for g, idx in prog.param_index.items()]
    mats += [_fixed(g, sdtype, dev).unsqueeze(0) for g in prog.fixed_names]
    allm = torch.cat(mats) if len(mats) > 1 else mats[0]  # (rows, 2, 2)
    out = []
    for c in prog.classes:
        kb = c.op_rows.shape[0]
        sel = allm[c.op_rows]  # (K, slots, 2, 2): one gather per class
        # leading single-qubit gates on distinct wires: one Kronecker product
        lead: dict[int, Tensor] = {}
        slot = 0
        while slot < len(c.pattern):
            gate, w = c.pattern[slot]
            if len(w) != 1 or w[0] in lead:
                break
            lead[w[0]] = sel[:, slot]
            slot += 1
        eye = torch.eye(2, dtype=sdtype, device=dev).expand(kb, 2, 2)
        m = None
        for w in range(c.g):
            f = lead.get(w, eye)
            m = f if m is None else _kron(m, f)
        for s in range(slot, len(c.pattern)):
            gate, w = c.pattern[s]
            m = _apply_to_matrix(m, sel[:, s], c.g, w, len(w) == 2)
        out.append(m)
    if prog.ctrl is not None:
        out.append(allm[prog.ctrl])
    return out


# --- step 3: amplitudes (hand-written forward and adjoint backward) ------------------


def _block_views(x: Tensor, n: int, lo: int, g: int) -> tuple[Tensor, int, int, int]:
    s = x.shape[0]
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    return x.view(s * a, d, b), a, d, b


def _apply_block(x: Tensor, y: Tensor, u: Tensor, n: int, lo: int, g: int) -> None:
    """``y = (I (x) u (x) I) x`` on wires ``lo..lo+g-1``, for each stacked row of ``x``."""
    xv, a, d, b = _block_views(x, n, lo, g)
    yv = y.view(xv.shape)
    if b == 1:
        torch.matmul(xv.view(-1, d), u.mT, out=yv.view(-1, d))
    else:
        torch.matmul(u, xv, out=yv)


def _block_grad(lam: Tensor, psi: Tensor, n: int, lo: int, g: int) -> Tensor:
    """``sum over the other wires of lam psi^H`` -> ``(2^g, 2^g)`` (lam, psi flat)."""
    a, d, b = 2**lo, 2**g, 2 ** (n - lo - g)
    lv, pv = lam.view(a, d, b), psi.view(a, d, b).conj()
    if b == 1:
        return lv.view(a, d).mT @ pv.view(a, d)
    if a == 1:
        return lv.view(d, b) @ pv.view(d, b).mT
    if d <= b:  # (a, d, d) partial products take no more room than the state
        return torch.matmul(lv, pv.mT).sum(0)
    return torch.tensordot(lv, pv, dims=([0, 2], [0, 2]))


def _ctrl_view(x: Tensor, n: int, c: int, t: int) -> tuple[Tensor, str]:
    """The control=1 part of each stacked row, with the target as a named einsum axis."""
    s = x.shape[0]
    if c < t:
        v = x.view(s, 2**c, 2, 2 ** (t - c - 1), 2, 2 ** (n - 1 - t))[:, :, 1]  # (s, A, M, 2, B)
        return v, "samjb"
    v = x.view(s, 2**t, 2, 2 ** (c - t - 1), 2, 2 ** (n - 1 - c))[:, :, :, :, 1]  # (s, A, 2, M, B)
    return v, "sajmb"


def _apply_ctrl(x: Tensor, u: Tensor, n: int, c: int, t: int) -> None:
    """In place: ``u`` on the target wherever the control reads 1."""
    v, sub = _ctrl_view(x, n, c, t)
    v.copy_(torch.einsum(f"ij,{sub}->{sub.replace('j', 'i')}", u, v))


def _run_forward(prog: FastProgram, mats: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Apply every step to the state in ``x`` (shape ``(1, 2^N)``), ping-ponging with ``y``;
    returns whichever holds the result."""
    n = prog.n_qubits
    for s in prog.steps:
        if isinstance(s, _Block):
            _apply_block(x, y, mats[s.tid][s.k], n, s.lo, s.g)
            x, y = y, x
        elif isinstance(s, _Perm):
            torch.index_select(x, 1, s.index, out=y)
            x, y = y, x
        elif isinstance(s, _Diag):
            x.mul_(prog.signs(s, x.dtype))
        else:
            _apply_ctrl(x, mats[s.tid][s.k], n, s.control, s.target)
    return x


class _AdjointProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, prog: FastProgram, *mats: Tensor) -> Tensor:
        ref = mats[0] if mats else None
        dtype = ref.dtype if ref is not None else torch.float64
        device = ref.device if ref is not None else torch.device("cpu")
        x, y = prog.workspace(dtype, device)
        x0, y0 = x[:1], y[:1]
        x0.zero_()
        x0[0, 0] = 1
        out = _run_forward(prog, mats, x0, y0)
        psi = out[0].clone()  # the only state kept for the backward
        ctx.prog = prog
        ctx.save_for_backward(psi, *mats)
        if psi.is_complex():
            return torch.view_as_real(psi).square().sum(-1)
        return psi.square()

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        prog: FastProgram = ctx.prog
        psi, *mats = ctx.saved_tensors
        n = prog.n_qubits
        x, y = prog.workspace(psi.dtype, psi.device)
        x[0].copy_(psi)
        torch.mul(psi, grad_p.to(psi.dtype), out=x[1])
        x[1].mul_(2)  # lambda = dL/dpsi
        grads = [torch.zeros_like(m) if ctx.needs_input_grad[i + 1] else None for i, m in enumerate(mats)]
        for s in reversed(prog.steps):
            if isinstance(s, _Block):
                u = mats[s.tid][s.k]
                _apply_block(x, y, u.mH, n, s.lo, s.g)  # y = [psi_before, lambda_before]
                if grads[s.tid] is not None:
                    grads[s.tid][s.k] += _block_grad(x[1], y[0], n, s.lo, s.g)
                x, y = y, x
            elif isinstance(s, _Perm):
                torch.index_select(x, 1, s.inverse, out=y)
                x, y = y, x
            elif isinstance(s, _Diag):
                x.mul_(prog.signs(s, x.dtype))
            else:
                u = mats[s.tid][s.k]
                lam_after = _ctrl_view(x[1:], n, s.control, s.target)[0].clone() if grads[s.tid] is not None else None
                _apply_ctrl(x, u.mH, n, s.control, s.target)  # un-compute psi, propagate lambda
                if lam_after is not None:
                    psi_before, sub = _ctrl_view(x[:1], n, s.control, s.target)
                    grads[s.tid][s.k] += torch.einsum(f"{sub.replace('j', 'i')},{sub}->ij", lam_after, psi_before.conj())
        return (None, *grads)


def fast_probabilities(prog: FastProgram, weights: Tensor) -> Tensor:
    """All ``2^N`` Born probabilities of ``prog`` at angles ``weights``, differentiable
    (adjoint backward). ``prog`` must live on ``weights.device`` (see :meth:`FastProgram.to`)."""
    if not prog.param_index and not prog.fixed_names:  # no gates with matrices: only permutations / signs of |0...0>
        flat = weights.reshape(-1)
        dtype = flat.dtype if prog.real else (torch.complex128 if flat.dtype == torch.float64 else torch.complex64)
        x, y = torch.zeros(1, 2**prog.n_qubits, dtype=dtype, device=flat.device), torch.empty(
            1, 2**prog.n_qubits, dtype=dtype, device=flat.device
        )
        x[0, 0] = 1
        psi = _run_forward(prog, [], x, y)[0]
        p = torch.view_as_real(psi).square().sum(-1) if psi.is_complex() else psi.square()
        return p + 0 * flat.sum()  # keep the graph connected to the angles
    return _AdjointProbs.apply(prog, *build_matrices(prog, weights))
