"""Exact statevector simulation in plain PyTorch (autograd differentiates it).

The state of N qubits is a flat tensor of 2^N amplitudes; basis index ``i`` has wire
``k``'s bit at position ``N-1-k`` (wire 0 is the most significant bit). An ansatz's
operation list is *compiled* once into a short program of steps:

- a layer of single-qubit gates (each wire at most once): the gates' matrices are
  built in one batched call per gate type, then applied wire by wire as small matmuls
  on the ``(2^k, 2, 2^(N-1-k))`` view of the state;
- a run of permutation gates (CNOT, X-free): composed into *one* index permutation,
  applied as a single gather;
- a run of diagonal +-1 gates (CZ): multiplied into *one* sign vector;
- a controlled parametric gate (CU3, CRY...): its matrix applied to the half of the
  state where the control reads 1.

When every gate is real (RY, H, X, CNOT, CZ, CRY) the state stays real and is
simulated in the real dtype: half the memory and a quarter of the multiply work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .ansatze import Op
from .gates import GATES

__all__ = ["Program", "compile_ops", "run", "validate_op", "zero_state"]


@dataclass
class _Layer:
    # gate name -> (wires, param index (k, n_params)); wires disjoint across entries
    groups: list[tuple[str, list[int], Tensor]]
    fixed: list[tuple[int, Tensor]] = field(default_factory=list)  # (wire, 2x2 matrix)


@dataclass
class _Permute:
    index: Tensor  # new_state = state[index]


@dataclass
class _Diagonal:
    signs: Tensor  # new_state = state * signs


@dataclass
class _Controlled:
    gate: str
    control: int
    target: int
    params: Tensor  # (1, n_params)


@dataclass
class Program:
    """A compiled circuit: a list of steps over ``n_qubits`` wires.

    Attributes:
        n_qubits: the number of wires.
        n_weights: the length of the flat weight vector the steps index into.
        real: True when every gate is real, so amplitudes stay real.
        steps: the fused steps, in application order.
        n_ops: the number of gates before fusion.
    """

    n_qubits: int
    n_weights: int
    real: bool
    steps: list
    n_ops: int

    def to(self, device: torch.device) -> "Program":
        """A copy whose index tensors live on ``device``."""
        moved = []
        for s in self.steps:
            if isinstance(s, _Layer):
                moved.append(
                    _Layer([(g, w, p.to(device)) for g, w, p in s.groups], [(w, m.to(device)) for w, m in s.fixed])
                )
            elif isinstance(s, _Permute):
                moved.append(_Permute(s.index.to(device)))
            elif isinstance(s, _Diagonal):
                moved.append(_Diagonal(s.signs.to(device)))
            else:
                moved.append(_Controlled(s.gate, s.control, s.target, s.params.to(device)))
        return Program(self.n_qubits, self.n_weights, self.real, moved, self.n_ops)


def _bit(index: Tensor, n: int, wire: int) -> Tensor:
    return (index >> (n - 1 - wire)) & 1


def validate_op(op: Op, n: int, n_weights: int) -> None:
    """Check one op against the gate table, ``n`` wires and ``n_weights`` angles.

    Raises:
        ValueError: an unknown gate, wrong wire count, a wire or angle index out of range.
    """
    if op.gate not in GATES:
        raise ValueError(f"unknown gate {op.gate!r} in an ansatz; valid gates: {sorted(GATES)}")
    spec = GATES[op.gate]
    if len(op.wires) != spec.n_wires or len(set(op.wires)) != spec.n_wires:
        raise ValueError(f"gate {op.gate} needs {spec.n_wires} distinct wires, got {op.wires}")
    if any(not 0 <= w < n for w in op.wires):
        raise ValueError(f"gate {op.gate} on wires {op.wires}: wires must be in 0..{n - 1}")
    if len(op.params) != spec.n_params:
        raise ValueError(f"gate {op.gate} takes {spec.n_params} angle(s), got indices {op.params}")
    if any(not 0 <= p < n_weights for p in op.params):
        raise ValueError(f"gate {op.gate}: angle indices {op.params} outside weights of size {n_weights}")


def compile_ops(ops: list[Op], n_qubits: int, n_weights: int) -> Program:
    """Fuse an operation list into a :class:`Program` (validating every op once).

    Raises:
        ValueError: an unknown gate, wrong wire count, a wire or angle index out of range.
    """
    for op in ops:
        validate_op(op, n_qubits, n_weights)
    dim = 2**n_qubits
    basis = torch.arange(dim, dtype=torch.long)
    steps: list = []

    def start(kind):
        if not steps or not isinstance(steps[-1], kind):
            steps.append(
                _Layer([], [])
                if kind is _Layer
                else _Permute(basis.clone())
                if kind is _Permute
                else _Diagonal(torch.ones(dim, dtype=torch.int8))
            )
        return steps[-1]

    layer_wires: set[int] = set()
    for op in ops:
        spec = GATES[op.gate]
        if spec.n_wires == 1:
            if not (steps and isinstance(steps[-1], _Layer)) or op.wires[0] in layer_wires:
                steps.append(_Layer([], []))
                layer_wires = set()
            layer = steps[-1]
            layer_wires.add(op.wires[0])
            if spec.n_params == 0:
                layer.fixed.append((op.wires[0], torch.tensor(spec.fixed, dtype=torch.complex128)))
            else:
                p = torch.tensor([op.params], dtype=torch.long)
                for i, (g, w, idx) in enumerate(layer.groups):
                    if g == op.gate:
                        layer.groups[i] = (g, w + [op.wires[0]], torch.cat([idx, p]))
                        break
                else:
                    layer.groups.append((op.gate, [op.wires[0]], p))
        elif spec.kind == "permutation":
            perm = start(_Permute)
            c, t = op.wires
            flip = basis ^ (_bit(basis, n_qubits, c) << (n_qubits - 1 - t))
            perm.index = perm.index[flip]  # compose: state[i] <- state[idx[flip[i]]]
        elif spec.kind == "diagonal":
            diag = start(_Diagonal)
            c, t = op.wires
            diag.signs = diag.signs * (1 - 2 * (_bit(basis, n_qubits, c) & _bit(basis, n_qubits, t))).to(torch.int8)
        else:
            steps.append(_Controlled(op.gate, op.wires[0], op.wires[1], torch.tensor([op.params], dtype=torch.long)))
    real = all(GATES[op.gate].real for op in ops)
    for s in steps:
        if isinstance(s, _Diagonal):
            s.signs = s.signs.to(torch.float64)
    return Program(n_qubits, n_weights, real, steps, len(ops))


def zero_state(n_qubits: int, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """``|0...0>`` as a flat ``(2^N,)`` tensor."""
    state = torch.zeros(2**n_qubits, dtype=dtype, device=device)
    state[0].fill_(1)  # fill_: item assignment would copy a host scalar and wait for a GPU
    return state


def _apply_1q(state: Tensor, matrix: Tensor, n: int, wire: int) -> Tensor:
    view = state.view(2**wire, 2, 2 ** (n - 1 - wire))  # (A, 2, B)
    return torch.matmul(matrix, view).view(-1)


def _apply_controlled(state: Tensor, matrix: Tensor, n: int, control: int, target: int) -> Tensor:
    view = state.view(2**control, 2, 2 ** (n - 1 - control))  # (A, 2, B)
    off, on = view[:, 0], view[:, 1]  # control reads 0 / 1, each (A, B)
    if target > control:  # target lies in B
        on3 = on.reshape(2**control * 2 ** (target - control - 1), 2, 2 ** (n - 1 - target))
    else:  # target lies in A
        on3 = on.reshape(2**target, 2, 2 ** (control - 1 - target) * 2 ** (n - 1 - control))
    on = torch.matmul(matrix, on3).reshape(off.shape)
    return torch.stack([off, on], 1).view(-1)


def run(program: Program, weights: Tensor, state: Tensor | None = None) -> Tensor:
    """Apply ``program`` with angles ``weights`` (any shape, flattened row-major).

    Args:
        program: from :func:`compile_ops`, on the same device as ``weights``.
        weights: the angles; their dtype sets the precision (float32 or float64).
        state: the input state; ``|0...0>`` when omitted.

    Returns:
        The final state, ``(2^N,)``: real dtype when ``program.real``, else complex.
    """
    n = program.n_qubits
    flat = weights.reshape(-1)
    cdtype = torch.complex128 if flat.dtype == torch.float64 else torch.complex64
    sdtype = flat.dtype if program.real else cdtype
    if state is None:
        state = zero_state(n, sdtype, flat.device)
    for step in program.steps:
        if isinstance(step, _Layer):
            for gate, wires, idx in step.groups:
                mats = GATES[gate].matrix(flat[idx]).to(sdtype)  # (k, 2, 2)
                for j, w in enumerate(wires):
                    state = _apply_1q(state, mats[j], n, w)
            for w, m in step.fixed:
                state = _apply_1q(state, (m.real if program.real else m).to(sdtype), n, w)
        elif isinstance(step, _Permute):
            state = state[step.index]
        elif isinstance(step, _Diagonal):
            state = state * step.signs.to(sdtype)
        else:
            mat = GATES[step.gate].matrix(flat[step.params])[0].to(sdtype)
            state = _apply_controlled(state, mat, n, step.control, step.target)
    return state
