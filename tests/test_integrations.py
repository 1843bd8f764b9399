"""The optional Qiskit / PennyLane bridges agree with our simulator (run where installed;
the test extra installs both)."""

import pytest
import torch

from qtrain.circuits import QNN

ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_qiskit_builds_the_same_circuit_from_our_qasm(ansatz):
    pytest.importorskip("qiskit_qasm3_import")
    from qtrain.integrations.qiskit import qiskit_probabilities

    qnn = QNN(3, 2, ansatz, dtype=torch.float64, seed=2)
    exact = qnn().detach()
    torch.testing.assert_close(qiskit_probabilities(qnn), exact, atol=1e-10, rtol=0)
    pytest.importorskip("qiskit_aer")
    sampled = qiskit_probabilities(qnn, shots=50_000, seed=3)
    assert ((sampled - exact).abs() <= 5 * (exact * (1 - exact) / 50_000).sqrt() + 1e-12).all()


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_pennylane_device_gives_the_same_distribution(ansatz):
    pytest.importorskip("pennylane")
    from qtrain.integrations.pennylane import pennylane_probabilities

    qnn = QNN(3, 2, ansatz, dtype=torch.float64, seed=4)
    exact = qnn().detach()
    torch.testing.assert_close(pennylane_probabilities(qnn), exact, atol=1e-10, rtol=0)
    sampled = pennylane_probabilities(qnn, shots=50_000, seed=5)
    assert ((sampled - exact).abs() <= 5 * (exact * (1 - exact) / 50_000).sqrt() + 1e-12).all()


def test_the_core_never_imports_the_sdks():
    import subprocess
    import sys

    code = "import sys, qtrain, qtrain.cli; print(any(m.split('.')[0] in ('qiskit', 'pennylane') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
