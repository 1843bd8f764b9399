"""Run a qtrain circuit on Qiskit: through OpenQASM 3, exactly or with an Aer sampler.

Requires ``pip install 'qtrain[qiskit]'`` (qiskit, qiskit-qasm3-import, qiskit-aer).
Returned distributions are in qtrain's order (wire 0 = most significant bit).
"""

from __future__ import annotations

import numpy as np
import torch

from ..circuits import QNN
from ..circuits.qasm import to_qasm

__all__ = ["to_qiskit", "qiskit_probabilities"]


def _require():
    try:
        import qiskit  # noqa: F401
        from qiskit import qasm3  # noqa: F401
    except ImportError as e:
        raise ImportError(f"this needs Qiskit ({e.name} is missing): pip install 'qtrain[qiskit]'") from None


def to_qiskit(qnn: QNN, *, measure: bool = False):
    """The QNN with its current angles as a ``qiskit.QuantumCircuit`` (parsed from OpenQASM 3)."""
    _require()
    from qiskit import qasm3

    return qasm3.loads(to_qasm(qnn.ansatz.operations(qnn.n_qubits, qnn.depth), qnn.weights, qnn.n_qubits,
                               measure=measure))


def _reorder(qiskit_probs: np.ndarray, n: int) -> np.ndarray:
    # Qiskit's index has q[0] as the least significant bit; reverse the bit order
    return qiskit_probs.reshape((2,) * n).transpose(tuple(range(n - 1, -1, -1))).reshape(-1)


def qiskit_probabilities(qnn: QNN, *, shots: int | None = None, seed: int | None = None) -> torch.Tensor:
    """The QNN's distribution computed by Qiskit: exact (``Statevector``) when ``shots`` is
    None, else estimated from ``shots`` samples of Aer's ``SamplerV2``."""
    _require()
    n = qnn.n_qubits
    if shots is None:
        from qiskit.quantum_info import Statevector

        probs = Statevector(to_qiskit(qnn)).probabilities()
    else:
        try:
            from qiskit_aer.primitives import SamplerV2
        except ImportError:
            raise ImportError("sampling with shots needs qiskit-aer: pip install 'qtrain[qiskit]'") from None
        circuit = to_qiskit(qnn, measure=True)
        result = SamplerV2(seed=seed).run([circuit], shots=shots).result()[0]
        counts = result.data.c.get_int_counts()
        probs = np.zeros(2**n)
        for index, count in counts.items():
            probs[index] = count / shots
    return torch.from_numpy(_reorder(np.asarray(probs, dtype=np.float64), n))
