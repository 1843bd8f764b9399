"""Ansaetze: which gates a circuit applies, and where each angle lives in ``weights``.

An ansatz is data: a weight shape and a list of :class:`Op` s whose ``params`` are
flat (row-major) indices into ``weights``. The simulator compiles that list once; the
same list can be drawn, exported or differentiated by other means.

To bring your own circuit, subclass :class:`Ansatz` and register it::

    >>> import qtrain
    >>> from qtrain.circuits import Ansatz, Op, register_ansatz
    >>> class RXChain(Ansatz):
    ...     name = "rx-cz-chain"
    ...     def weight_shape(self, n_qubits, depth):
    ...         return (depth, n_qubits)
    ...     def operations(self, n_qubits, depth):
    ...         ops = []
    ...         for l in range(depth):
    ...             ops += [Op("RX", (k,), (l * n_qubits + k,)) for k in range(n_qubits)]
    ...             ops += [Op("CZ", (k, k + 1)) for k in range(n_qubits - 1)]
    ...         return ops
    >>> _ = register_ansatz(RXChain())
    >>> qtrain.QNN(3, depth=2, ansatz="rx-cz-chain")().shape
    torch.Size([8])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Op", "Ansatz", "U3CU3Ring", "RYCNOTRing", "RYCNOTChain", "RYRZCZ"]


@dataclass(frozen=True)
class Op:
    """One gate of a circuit.

    Attributes:
        gate: a name from :data:`qtrain.circuits.gates.GATES` (``"RY"``, ``"CU3"``...).
        wires: the wires it acts on; for a controlled gate ``(control, target)``.
            Wire 0 is the most significant bit of the basis index.
        params: flat indices into ``weights.flatten()`` of its angles, in the gate's
            parameter order (``(theta, phi, lambda)`` for U3).
    """

    gate: str
    wires: tuple[int, ...]
    params: tuple[int, ...] = ()


class Ansatz:
    """Base class of a circuit family ``(n_qubits, depth) -> gates``.

    Subclasses set ``name`` and implement :meth:`weight_shape` and
    :meth:`operations`; :meth:`init_weights` may be overridden (default: uniform
    in [-pi, pi], as in the reference code).
    """

    name: str = ""

    def weight_shape(self, n_qubits: int, depth: int) -> tuple[int, ...]:
        raise NotImplementedError

    def operations(self, n_qubits: int, depth: int) -> list[Op]:
        raise NotImplementedError

    def init_weights(self, weights: torch.Tensor, generator: torch.Generator | None) -> None:
        """Fill ``weights`` in place (called under ``torch.no_grad()``)."""
        weights.uniform_(-math.pi, math.pi, generator=generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _ring(n: int) -> list[tuple[int, int]]:
    # A ring needs two distinct wires: on one qubit there is no pair to entangle.
    return [(k, (k + 1) % n) for k in range(n)] if n >= 2 else []


def _chain(n: int) -> list[tuple[int, int]]:
    return [(k, k + 1) for k in range(n - 1)]


class U3CU3Ring(Ansatz):
    """``"u3-cu3-ring"``, the papers' circuit (the default).

    ``weights`` has shape ``(depth, 2, N, 3)``. In block ``l``: ``U3(weights[l, 0, k])``
    on every wire ``k``, then for ``k = 0..N-1`` in order a controlled-U3
    ``CU3(weights[l, 1, k])`` with control ``k`` and target ``(k + 1) mod N``. The last
    axis is ``(theta, phi, lambda)``. 6N angles per block. With N = 1 there is no
    ring; the ``[l, 1]`` angles then have no effect.
    """

    name = "u3-cu3-ring"

    def weight_shape(self, n_qubits: int, depth: int) -> tuple[int, ...]:
        return (depth, 2, n_qubits, 3)

    def operations(self, n_qubits: int, depth: int) -> list[Op]:
        shape = self.weight_shape(n_qubits, depth)
        idx = lambda l, j, k: tuple(int(np.ravel_multi_index((l, j, k, a), shape)) for a in range(3))  # noqa: E731
        ops: list[Op] = []
        for l in range(depth):
            ops += [Op("U3", (k,), idx(l, 0, k)) for k in range(n_qubits)]
            ops += [Op("CU3", (c, t), idx(l, 1, c)) for c, t in _ring(n_qubits)]
        return ops


class _RotationThenFixed(Ansatz):
    """Shape ``(depth, N)``: a layer of rotations, then fixed two-qubit gates."""

    rotation = "RY"
    entangler = "CNOT"
    prefix_hadamard = False

    def weight_shape(self, n_qubits: int, depth: int) -> tuple[int, ...]:
        return (depth, n_qubits)

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def _rotation(self, layer: int) -> str:
        return self.rotation

    def operations(self, n_qubits: int, depth: int) -> list[Op]:
        ops = [Op("H", (k,)) for k in range(n_qubits)] if self.prefix_hadamard else []
        for l in range(depth):
            gate = self._rotation(l)
            ops += [Op(gate, (k,), (l * n_qubits + k,)) for k in range(n_qubits)]
            ops += [Op(self.entangler, pair) for pair in self._pairs(n_qubits)]
        return ops


class RYCNOTRing(_RotationThenFixed):
    """``"ry-cnot-ring"``: ``weights[l, k]`` is the RY angle on wire ``k`` in layer ``l``,
    then ``CNOT(k, (k + 1) mod N)`` for ``k = 0..N-1`` in that order. Real amplitudes."""

    name = "ry-cnot-ring"

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        return _ring(n)


class RYCNOTChain(_RotationThenFixed):
    """``"ry-cnot-chain"``: RY on every wire, then ``CNOT(k, k + 1)`` for ``k = 0..N-2``.
    Shape ``(depth, N)``. Real amplitudes."""

    name = "ry-cnot-chain"

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        return _chain(n)


class RYRZCZ(_RotationThenFixed):
    """``"ry-rz-cz"``: a Hadamard on every wire at the start, then in layer ``l`` RY
    (``l`` even) or RZ (``l`` odd) with angle ``weights[l, k]`` on wire ``k``, then
    ``CZ(k, k + 1)`` for ``k = 0..N-2``. Shape ``(depth, N)``."""

    name = "ry-rz-cz"
    entangler = "CZ"
    prefix_hadamard = True

    def _rotation(self, layer: int) -> str:
        return "RY" if layer % 2 == 0 else "RZ"

    def _pairs(self, n: int) -> list[tuple[int, int]]:
        return _chain(n)
