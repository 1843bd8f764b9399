"""The simulator against the independent dense-matrix reference, and its gradients."""

import math

import numpy as np
import pytest
import torch

import qtrain
import reference
from qtrain.circuits import ANSATZE, Ansatz, Op, QNN, get_ansatz, register_ansatz

PAPER_ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_probabilities_match_the_dense_reference(ansatz, n, dtype):
    qnn = QNN(n, 3, ansatz, dtype=dtype, seed=100 + n)
    probs = qnn().detach()
    expected = reference.probabilities(ansatz, qnn.weights.detach().double().numpy(), n)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert probs.dtype == dtype
    np.testing.assert_allclose(probs.double().numpy(), expected, atol=tol)
    assert abs(float(probs.sum()) - 1) < tol * 10


@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_weight_shapes_follow_the_documented_layout(ansatz):
    qnn = QNN(5, 4, ansatz)
    assert tuple(qnn.weights.shape) == reference.WEIGHT_SHAPES[ansatz](5, 4)


def test_u3_cu3_ring_has_6NL_angles():
    for n, depth in [(2, 1), (13, 16), (7, 3)]:
        assert QNN(n, depth, "u3-cu3-ring").weights.numel() == 6 * n * depth


def test_real_ansaetze_take_the_real_amplitude_path():
    assert QNN(4, 2, "ry-cnot-ring").state().dtype == torch.float32
    assert QNN(4, 2, "ry-cnot-chain", dtype=torch.float64).state().dtype == torch.float64
    assert QNN(4, 2, "u3-cu3-ring").state().dtype == torch.complex64
    assert QNN(4, 2, "ry-rz-cz", dtype="float64").state().dtype == torch.complex128


@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_autograd_gradient_passes_float64_gradcheck(ansatz):
    qnn = QNN(3, 2, ansatz, dtype=torch.float64, seed=7)
    proj = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(theta):
        return torch.func.functional_call(qnn, {"weights": theta}, ()) @ proj

    assert torch.autograd.gradcheck(f, (qnn.weights.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_gradient_matches_central_finite_differences_of_the_reference(ansatz):
    n = 3
    qnn = QNN(n, 2, ansatz, dtype=torch.float64, seed=3)
    proj = np.linspace(-1, 1, 2**n)
    (qnn() @ torch.tensor(proj)).backward()
    w = qnn.weights.detach().numpy()
    fd = np.zeros_like(w)
    h = 1e-6
    for idx in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        fd[idx] = (reference.probabilities(ansatz, wp, n) - reference.probabilities(ansatz, wm, n)) @ proj / (2 * h)
    np.testing.assert_allclose(qnn.weights.grad.numpy(), fd, atol=1e-8)


def test_functional_call_with_external_angles():
    qnn = QNN(2, 1, "ry-cnot-chain")
    # RY(pi) on wire 0 flips it: |10> then CNOT(0,1) -> |11> (index 3, wire 0 = MSB).
    theta = torch.tensor([[math.pi, 0.0]])
    probs = torch.func.functional_call(qnn, {"weights": theta}, ())
    torch.testing.assert_close(probs, torch.tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert torch.equal(qnn.probabilities(), qnn())


def test_seed_makes_initialisation_reproducible_without_touching_the_global_rng():
    state = torch.get_rng_state()
    a, b = QNN(4, 2, seed=5).weights.detach(), QNN(4, 2, seed=5).weights.detach()
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, QNN(4, 2, seed=6).weights.detach())
    assert float(a.abs().max()) <= math.pi


def test_unknown_ansatz_lists_the_valid_ones():
    with pytest.raises(ValueError, match="u3-cu3-ring") as e:
        QNN(3, 1, ansatz="u3-ring")
    assert "ry-rz-cz" in str(e.value)


@pytest.mark.parametrize("bad", [0, -1])
def test_depth_and_qubits_below_one_are_rejected(bad):
    with pytest.raises(ValueError, match="`depth` must be >= 1"):
        QNN(3, bad)
    with pytest.raises(ValueError, match="`n_qubits` must be >= 1"):
        QNN(bad, 2)
    with pytest.raises(TypeError, match="`depth` must be an int"):
        QNN(3, 2.0)


def test_a_user_ansatz_runs_and_is_checked():
    class CRYLadder(Ansatz):
        name = "test-cry-ladder"

        def weight_shape(self, n, depth):
            return (depth, n)

        def operations(self, n, depth):
            ops = []
            for l in range(depth):
                ops += [Op("H", (k,)) for k in range(n)]
                ops += [Op("CRY", (k, (k + 1) % n), (l * n + k,)) for k in range(n)]
            return ops

    register_ansatz(CRYLadder(), overwrite=True)
    qnn = QNN(3, 2, "test-cry-ladder", dtype=torch.float64, seed=0)
    assert qnn.real
    # dense check of the same circuit
    w = qnn.weights.detach().numpy()
    U = np.eye(8, dtype=complex)
    for l in range(2):
        for k in range(3):
            U = reference.embed({k: reference.H}, 3) @ U
        for k in range(3):
            U = reference.controlled(reference.ry(w[l, k]), k, (k + 1) % 3, 3) @ U
    np.testing.assert_allclose(qnn().detach().numpy(), np.abs(U[:, 0]) ** 2, atol=1e-12)
    with pytest.raises(ValueError, match="already registered"):
        register_ansatz(CRYLadder())

    class Broken(Ansatz):
        name = "test-broken"

        def weight_shape(self, n, depth):
            return (depth,)

        def operations(self, n, depth):
            return [Op("CNOT", (0, 0))]

    with pytest.raises(ValueError, match="distinct wires"):
        QNN(2, 1, Broken())


def test_memory_estimate_refuses_a_circuit_that_cannot_fit(monkeypatch):
    import qtrain.resources as res

    monkeypatch.setattr(res, "available_bytes", lambda device=None: 100 * 2**20)
    with pytest.raises(MemoryError, match=r"needs about .* GiB .* only 100.0 MiB"):
        QNN(26, 10, "u3-cu3-ring")
    QNN(8, 2)  # small ones still fit


def test_registry_names_are_the_papers():
    assert set(PAPER_ANSATZE) <= set(ANSATZE)
    assert get_ansatz("ry-cnot-ring") is ANSATZE["ry-cnot-ring"]
    assert isinstance(qtrain.QNN(2, 1), torch.nn.Module)
