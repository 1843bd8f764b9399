"""Run a qtrain circuit on a PennyLane device (exactly or with shots).

Requires ``pip install 'qtrain[pennylane]'``. Wire ``k`` is PennyLane wire ``k``; both
libraries read wire 0 as the most significant bit, so distributions compare directly.
"""

from __future__ import annotations

import torch

from ..circuits import QNN

__all__ = ["pennylane_probabilities", "PENNYLANE_GATES"]

PENNYLANE_GATES = {
    "H": "Hadamard", "X": "PauliX", "RX": "RX", "RY": "RY", "RZ": "RZ", "U3": "U3",
    "CNOT": "CNOT", "CZ": "CZ", "CRX": "CRX", "CRY": "CRY", "CRZ": "CRZ",
}


def pennylane_probabilities(qnn: QNN, *, device: str = "default.qubit", shots: int | None = None,
                            seed: int | None = None) -> torch.Tensor:
    """The QNN's distribution from a PennyLane device (float64, qtrain's order)."""
    try:
        import pennylane as qml
    except ImportError:
        raise ImportError("this needs PennyLane: pip install 'qtrain[pennylane]'") from None
    n = qnn.n_qubits
    flat = qnn.weights.detach().double().reshape(-1).cpu().numpy()
    ops = qnn.ansatz.operations(n, qnn.depth)
    dev = qml.device(device, wires=n, seed=seed)

    def circuit():
        for op in ops:
            angles = [flat[p] for p in op.params]
            if op.gate == "CU3":  # controlled-U3, PennyLane's ctrl of its U3 (same matrix)
                qml.ctrl(qml.U3, control=op.wires[0])(*angles, wires=op.wires[1])
            else:
                getattr(qml, PENNYLANE_GATES[op.gate])(*angles, wires=list(op.wires))
        return qml.probs(wires=range(n))

    qnode = qml.QNode(circuit, dev)
    if shots is not None:
        qnode = qml.set_shots(qnode, shots=shots) if hasattr(qml, "set_shots") else qml.QNode(
            circuit, qml.device(device, wires=n, shots=shots, seed=seed))
    return torch.as_tensor(qnode(), dtype=torch.float64)
