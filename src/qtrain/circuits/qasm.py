"""OpenQASM 3 export of a circuit with its trained angles (no extra dependency).

qtrain's wire ``k`` becomes ``q[k]``. qtrain reads wire 0 as the *most* significant bit
of a basis index; Qiskit reads ``q[0]`` as the *least* significant, so reverse the bit
string (or the qubit order) when comparing distributions.
"""

from __future__ import annotations

from torch import Tensor

from .ansatze import Op

__all__ = ["to_qasm", "QASM_GATES"]

QASM_GATES = {
    "H": "h", "X": "x", "RX": "rx", "RY": "ry", "RZ": "rz", "U3": "u3",
    "CNOT": "cx", "CZ": "cz", "CRX": "crx", "CRY": "cry", "CRZ": "crz",
    "CU3": "cu",  # stdgates' cu(theta, phi, lambda, gamma) with gamma = 0 is controlled-U3
}
"""qtrain gate -> stdgates.inc gate."""


def to_qasm(ops: list[Op], weights: Tensor, n_qubits: int, *, measure: bool = True, comment: str = "") -> str:
    """The circuit as an OpenQASM 3 program (angles in radians, full float precision).

    >>> import torch
    >>> from qtrain.circuits import Op
    >>> print(to_qasm([Op("RY", (0,), (0,)), Op("CNOT", (0, 1))], torch.tensor([0.5]), 2, measure=False))
    OPENQASM 3.0;
    include "stdgates.inc";
    // qtrain: wire 0 = q[0] is the most significant bit of the basis index
    qubit[2] q;
    ry(0.5) q[0];
    cx q[0], q[1];
    <BLANKLINE>
    """
    flat = weights.detach().double().reshape(-1).cpu().tolist()
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";',
             "// qtrain: wire 0 = q[0] is the most significant bit of the basis index"]
    if comment:
        lines += [f"// {line}" for line in comment.splitlines()]
    lines.append(f"qubit[{n_qubits}] q;")
    if measure:
        lines.append(f"bit[{n_qubits}] c;")
    for op in ops:
        if op.gate not in QASM_GATES:
            raise ValueError(f"gate {op.gate} has no OpenQASM 3 stdgates equivalent")
        args = [repr(flat[p]) for p in op.params] + (["0.0"] if op.gate == "CU3" else [])
        name = QASM_GATES[op.gate] + (f"({', '.join(args)})" if args else "")
        lines.append(f"{name} {', '.join(f'q[{w}]' for w in op.wires)};")
    if measure:
        lines.append("c = measure q;")
    return "\n".join(lines) + "\n"
