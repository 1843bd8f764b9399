"""Gate matrices, and nothing else.

Each parametric gate is a function ``angles -> matrices`` batched over a leading
axis, so one call builds the matrices of a whole layer. Fixed gates are constants.
Applying gates to a state is :mod:`qtrain.circuits.statevector`'s job; which gates a
circuit uses is an ansatz's job (:mod:`qtrain.circuits.ansatze`).

Conventions (Qiskit / PennyLane):

.. math::

    R_Y(\\theta) = \\begin{pmatrix} \\cos\\frac{\\theta}{2} & -\\sin\\frac{\\theta}{2} \\\\
                                   \\sin\\frac{\\theta}{2} & \\cos\\frac{\\theta}{2} \\end{pmatrix},\\quad
    U_3(\\theta, \\phi, \\lambda) = \\begin{pmatrix}
        \\cos\\frac{\\theta}{2} & -e^{i\\lambda}\\sin\\frac{\\theta}{2} \\\\
        e^{i\\phi}\\sin\\frac{\\theta}{2} & e^{i(\\phi+\\lambda)}\\cos\\frac{\\theta}{2}
    \\end{pmatrix}

A controlled gate ``C-U`` applies ``U`` to its target when its control reads 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["GateSpec", "GATES", "rx", "ry", "rz", "u3"]


def _cplx(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


def ry(theta: Tensor) -> Tensor:
    """RY matrices, ``(...,) -> (..., 2, 2)``, real."""
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rx(theta: Tensor) -> Tensor:
    """RX matrices, ``(...,) -> (..., 2, 2)``, complex."""
    c = torch.cos(theta / 2).to(_cplx(theta.dtype))
    s = torch.sin(theta / 2).to(_cplx(theta.dtype))
    ms = -1j * s
    return torch.stack([torch.stack([c, ms], -1), torch.stack([ms, c], -1)], -2)


def rz(theta: Tensor) -> Tensor:
    """RZ matrices ``diag(e^{-i theta/2}, e^{i theta/2})``, ``(...,) -> (..., 2, 2)``."""
    half = theta / 2
    e_minus = torch.polar(torch.ones_like(half), -half)
    e_plus = torch.polar(torch.ones_like(half), half)
    zero = torch.zeros_like(e_minus)
    return torch.stack([torch.stack([e_minus, zero], -1), torch.stack([zero, e_plus], -1)], -2)


def u3(angles: Tensor) -> Tensor:
    """U3 matrices from ``(..., 3)`` angles ordered (theta, phi, lambda) -> ``(..., 2, 2)``."""
    theta, phi, lam = angles.unbind(-1)
    c = torch.cos(theta / 2)
    s = torch.sin(theta / 2)
    one = torch.ones_like(theta)
    e_phi = torch.polar(one, phi)
    e_lam = torch.polar(one, lam)
    e_both = torch.polar(one, phi + lam)
    row0 = torch.stack([c.to(e_phi.dtype), -e_lam * s], -1)
    row1 = torch.stack([e_phi * s, e_both * c], -1)
    return torch.stack([row0, row1], -2)


@dataclass(frozen=True)
class GateSpec:
    """What the simulator needs to know about a gate.

    Attributes:
        name: the gate's name as used in ansatz operation lists.
        n_wires: 1 or 2.
        n_params: the number of angles it takes.
        matrix: for a parametric gate, ``angles (k, n_params) -> (k, 2, 2)`` (the
            *target* matrix for a controlled gate); for a fixed 1-qubit gate, ``None``
            and ``fixed`` holds the 2x2 matrix.
        controlled: 2-wire gates of the form ``|0><0| (x) I + |1><1| (x) U``.
        real: the matrix is real for real angles (keeps the real-amplitude path).
        kind: ``"unitary"``, ``"permutation"`` (a basis permutation such as CNOT) or
            ``"diagonal"`` (a fixed +-1 phase such as CZ); the simulator fuses runs of
            the last two into one gather or one multiply.
    """

    name: str
    n_wires: int
    n_params: int
    matrix: Callable[[Tensor], Tensor] | None = None
    fixed: tuple[tuple[complex, complex], tuple[complex, complex]] | None = None
    controlled: bool = False
    real: bool = True
    kind: str = "unitary"


_SQ = 1 / math.sqrt(2)

GATES: dict[str, GateSpec] = {
    "H": GateSpec("H", 1, 0, fixed=((_SQ, _SQ), (_SQ, -_SQ))),
    "X": GateSpec("X", 1, 0, fixed=((0, 1), (1, 0))),
    "RX": GateSpec("RX", 1, 1, lambda a: rx(a[:, 0]), real=False),
    "RY": GateSpec("RY", 1, 1, lambda a: ry(a[:, 0])),
    "RZ": GateSpec("RZ", 1, 1, lambda a: rz(a[:, 0]), real=False),
    "U3": GateSpec("U3", 1, 3, u3, real=False),
    "CNOT": GateSpec("CNOT", 2, 0, controlled=True, kind="permutation"),
    "CZ": GateSpec("CZ", 2, 0, controlled=True, kind="diagonal"),
    "CRX": GateSpec("CRX", 2, 1, lambda a: rx(a[:, 0]), controlled=True, real=False),
    "CRY": GateSpec("CRY", 2, 1, lambda a: ry(a[:, 0]), controlled=True),
    "CRZ": GateSpec("CRZ", 2, 1, lambda a: rz(a[:, 0]), controlled=True, real=False),
    "CU3": GateSpec("CU3", 2, 3, u3, controlled=True, real=False),
}
"""Every gate an ansatz may use, by name."""
