"""Gradients a quantum device could estimate: parameter-shift rules and SPSA.

:class:`Executor` runs a circuit the way hardware hands results back: exact state ->
noise -> (optionally) ``shots`` samples. Two autograd Functions differentiate through it
using only such executions:

``"parameter-shift"``: for an angle ``t`` in a gate whose generator has eigenvalues
``{+-1/2}`` (RX, RY, RZ, and U3's theta) or ``{0, 1}`` (U3's and CU3's phi and lambda,
which enter as ``diag(1, e^{i t})``):

.. math::  \\partial_t f = \\tfrac12 [f(t + \\tfrac\\pi2) - f(t - \\tfrac\\pi2)]

(2 executions). Controlled rotations (CRX, CRY, CRZ, CU3's theta) have generator
eigenvalues ``{0, +-1/2}`` and need the four-term rule

.. math::  \\partial_t f = c_+ [f(t + \\tfrac\\pi2) - f(t - \\tfrac\\pi2)]
                         - c_- [f(t + \\tfrac{3\\pi}2) - f(t - \\tfrac{3\\pi}2)],
           \\quad c_\\pm = \\frac{\\sqrt2 \\pm 1}{4\\sqrt2}

(4 executions). Each *occurrence* of an angle is shifted on its own, so ansaetze that
reuse an angle are handled exactly. Cost per backward: ``2 n_2 + 4 n_4`` executions of
``shots`` each, where ``n_2``/``n_4`` count the angle occurrences with each rule: ``2 N L``
for ``"ry-cnot-ring"``, ``14 N L`` for ``"u3-cu3-ring"`` (U3: 3 x 2; CU3: 4 + 2 + 2).

``"spsa"``: one random direction ``Delta`` in ``{+-1}^n`` per backward,
``g = [v.p(t + c Delta) - v.p(t - c Delta)] / (2c) Delta``; 2 executions, biased by
``O(c^2)``, noisy, cheap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .ansatze import Op
from .measure import exact_probs
from .noise import depolarize, readout_flip
from .fast import compile_fast, fast_probabilities, supports_fast
from .sampling import sample_probs
from .statevector import compile_ops, run

__all__ = ["SHIFT_RULES", "Executor", "ParameterShift", "SPSA", "executions_per_step"]

_TWO = ((math.pi / 2, 0.5), (-math.pi / 2, -0.5))
_CP = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_CM = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
_FOUR = ((math.pi / 2, _CP), (-math.pi / 2, -_CP), (3 * math.pi / 2, -_CM), (-3 * math.pi / 2, _CM))

SHIFT_RULES: dict[str, tuple[tuple[tuple[float, float], ...], ...]] = {
    "RX": (_TWO,),
    "RY": (_TWO,),
    "RZ": (_TWO,),
    "U3": (_TWO, _TWO, _TWO),
    "CRX": (_FOUR,),
    "CRY": (_FOUR,),
    "CRZ": (_FOUR,),
    "CU3": (_FOUR, _TWO, _TWO),
}
"""Per gate, per angle: the ``(shift, coefficient)`` terms of its exact shift rule."""


class Executor:
    """Run a circuit as a device would: exact probabilities, noise, then ``shots`` samples.

    Args:
        ops: the ansatz's operations (angle indices into the flat ``weights``).
        n_qubits, n_weights, depth: the circuit's size (``depth`` for per-layer noise).
        shots: ``None`` for exact probabilities, else samples per execution.
        depolarizing: global depolarizing probability per layer.
        readout_error: bit-flip probability at readout (one for all wires, or one per wire).
        generator: draws the samples (and SPSA directions); its state decides the stream.
    """

    def __init__(self, ops: list[Op], n_qubits: int, n_weights: int, depth: int, *, shots: int | None = None,
                 depolarizing: float = 0.0, readout_error=0.0, generator: torch.Generator | None = None) -> None:
        # one flat slot per occurrence, so each gate's angle can be shifted on its own
        expanded, index = [], []
        for op in ops:
            new = []
            for p in op.params:
                new.append(len(index))
                index.append(p)
            expanded.append(Op(op.gate, op.wires, tuple(new)))
        self.ops = expanded
        self.index = torch.tensor(index, dtype=torch.long)
        self.n_qubits, self.n_weights, self.depth = n_qubits, n_weights, depth
        self.shots, self.depolarizing, self.readout_error = shots, depolarizing, readout_error
        self.generator = generator
        self.on_draw = None  # called after every random draw (the QNN saves the sampler state)
        n_angles = max(1, len(index))
        # executions are forward-only: the fused simulator when it applies, else the reference
        self._fast = compile_fast(expanded, n_qubits, n_angles) if supports_fast(expanded) else None
        self._program = None if self._fast is not None else compile_ops(expanded, n_qubits, n_angles)
        self._programs: dict[torch.device, object] = {}

    def expand(self, weights: Tensor) -> Tensor:
        """Flat weights -> one angle per occurrence."""
        return weights.reshape(-1)[self.index.to(weights.device)]

    def noisy(self, probs: Tensor) -> Tensor:
        """Apply the noise model (differentiable)."""
        probs = depolarize(probs, self.depolarizing, self.depth)
        if self.readout_error:
            probs = readout_flip(probs, self.readout_error, self.n_qubits)
        return probs

    @torch.no_grad()
    def execute(self, angles: Tensor) -> Tensor:
        """One execution: what the device returns for per-occurrence ``angles``."""
        if angles.device not in self._programs:
            self._programs[angles.device] = (self._fast or self._program).to(angles.device)
        prog = self._programs[angles.device]
        probs = fast_probabilities(prog, angles) if self._fast is not None else exact_probs(run(prog, angles))
        probs = self.noisy(probs)
        return probs if self.shots is None else self.sample(probs)

    def sample(self, probs: Tensor) -> Tensor:
        """Estimate ``probs`` from ``shots`` draws of the executor's generator."""
        out = sample(probs, self.shots, self.generator)
        if self.on_draw is not None:
            self.on_draw()
        return out

    def direction(self, like: Tensor) -> Tensor:
        """A random +-1 vector shaped like ``like`` (SPSA)."""
        delta = torch.randint(0, 2, like.shape, generator=self.generator) * 2 - 1
        if self.on_draw is not None:
            self.on_draw()
        return delta.to(like.dtype).to(like.device)

    def shift_terms(self) -> list[tuple[int, tuple[tuple[float, float], ...]]]:
        """``(occurrence, rule)`` for every angle occurrence."""
        terms = []
        for op in self.ops:
            if op.params and op.gate not in SHIFT_RULES:
                raise ValueError(f"no parameter-shift rule for gate {op.gate}; use diff_method='backprop' or 'spsa'")
            for slot, p in enumerate(op.params):
                terms.append((p, SHIFT_RULES[op.gate][slot]))
        return terms


def sample(probs: Tensor, shots: int, generator: torch.Generator | None) -> Tensor:
    """``sample_probs`` with a CPU generator whatever the device (one small transfer)."""
    if generator is not None and generator.device != probs.device:
        return sample_probs(probs.cpu(), shots, generator).to(probs.device)
    return sample_probs(probs, shots, generator)


def executions_per_step(executor: Executor, diff_method: str) -> int:
    """Circuit executions one training step costs (forward + backward)."""
    if diff_method == "parameter-shift":
        return 1 + sum(len(rule) for _, rule in executor.shift_terms())
    if diff_method == "spsa":
        return 3
    return 1


def _execute_once(ctx, weights: Tensor, executor: Executor) -> Tensor:
    # the forward of both estimators: one execution, remembered for the backward
    ctx.executor = executor
    ctx.save_for_backward(weights)
    return executor.execute(executor.expand(weights))


class ParameterShift(torch.autograd.Function):
    """``probs = ParameterShift.apply(weights, executor)``: forward is one execution, the
    backward estimates ``d(v . p)/dw`` from shifted executions only."""

    @staticmethod
    def forward(ctx, weights: Tensor, executor: Executor) -> Tensor:
        return _execute_once(ctx, weights, executor)

    @staticmethod
    def backward(ctx, grad_probs: Tensor):
        (weights,) = ctx.saved_tensors
        ex: Executor = ctx.executor
        angles = ex.expand(weights.detach())
        grad_angles = torch.zeros_like(angles)
        for k, rule in ex.shift_terms():
            for shift, coeff in rule:
                shifted = angles.clone()
                shifted[k] += shift
                grad_angles[k] += coeff * torch.dot(grad_probs, ex.execute(shifted).to(grad_probs.dtype))
        grad = torch.zeros(weights.numel(), dtype=weights.dtype, device=weights.device)
        grad.index_add_(0, ex.index.to(weights.device), grad_angles)
        return grad.view_as(weights), None


class SPSA(torch.autograd.Function):
    """``probs = SPSA.apply(weights, executor, c)``: simultaneous-perturbation estimate
    of ``d(v . p)/dw`` from two executions along a random +-1 direction."""

    @staticmethod
    def forward(ctx, weights: Tensor, executor: Executor, c: float) -> Tensor:
        ctx.c = c
        return _execute_once(ctx, weights, executor)

    @staticmethod
    def backward(ctx, grad_probs: Tensor):
        (weights,) = ctx.saved_tensors
        ex: Executor = ctx.executor
        w = weights.detach()
        delta = ex.direction(w)
        plus = torch.dot(grad_probs, ex.execute(ex.expand(w + ctx.c * delta)).to(grad_probs.dtype))
        minus = torch.dot(grad_probs, ex.execute(ex.expand(w - ctx.c * delta)).to(grad_probs.dtype))
        return (plus - minus) / (2 * ctx.c) * delta, None, None
