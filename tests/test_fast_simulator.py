"""The fused adjoint simulator (the QNN default) against the autograd reference
simulator and the dense reference: values, gradients, dtypes, user ansaetze."""

import math
import random

import numpy as np
import pytest
import torch

import reference
from qtrain.circuits import Ansatz, Op, QNN, register_ansatz
from qtrain.circuits.fast import compile_fast, fast_probabilities
from qtrain.circuits.qnn import estimate_circuit_bytes

PAPER_ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


def _pair(n, depth, ansatz, dtype=torch.float64, seed=0, **kw):
    fast = QNN(n, depth, ansatz, dtype=dtype, seed=seed, **kw)
    ref = QNN(n, depth, ansatz, dtype=dtype, seed=seed, method="autograd")
    return fast, ref


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_fast_probabilities_and_gradients_equal_the_autograd_reference(ansatz, n):
    rng = random.Random(1000 * n + len(ansatz))
    depth = rng.randint(1, 4)
    fast, ref = _pair(n, depth, ansatz, seed=rng.randint(0, 10**6))
    assert fast.method == "adjoint" and ref.method == "autograd"
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    pf, pr = fast(), ref()
    torch.testing.assert_close(pf, pr, atol=1e-10, rtol=0)
    (pf @ proj).backward()
    (pr @ proj).backward()
    torch.testing.assert_close(fast.weights.grad, ref.weights.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("max_block", [1, 2, 3, 7])
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_every_block_size_gives_the_same_answer(ansatz, max_block):
    n, depth = 7, 2
    ref = QNN(n, depth, ansatz, dtype=torch.float64, seed=4, method="autograd")
    prog = compile_fast(ref._ops, n, ref.weights.numel(), max_block=max_block)
    theta = ref.weights.detach().clone().requires_grad_()
    proj = torch.linspace(-1, 1, 2**n, dtype=torch.float64)
    pf = fast_probabilities(prog, theta)
    torch.testing.assert_close(pf, ref().detach(), atol=1e-10, rtol=0)
    (pf @ proj).backward()
    (ref() @ proj).backward()
    torch.testing.assert_close(theta.grad, ref.weights.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_adjoint_gradient_passes_float64_gradcheck(ansatz, n):
    qnn = QNN(n, 2, ansatz, dtype=torch.float64, seed=11)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def f(theta):
        return torch.func.functional_call(qnn, {"weights": theta}, ()) @ proj

    assert torch.autograd.gradcheck(f, (qnn.weights.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_float32_probabilities_are_within_1e6_of_float64(ansatz):
    n = 10
    q64 = QNN(n, 6, ansatz, dtype=torch.float64, seed=2)
    q32 = QNN(n, 6, ansatz, dtype=torch.float32)
    p32 = torch.func.functional_call(q32, {"weights": q64.weights.detach().float()}, ())
    assert p32.dtype == torch.float32
    assert float((p32.double() - q64().detach()).abs().max()) < 1e-6


def test_fast_path_matches_the_dense_reference_with_long_range_gates():
    n = 7  # blocks, the ring's wrap-around gate in place, shared permutations
    for ansatz in PAPER_ANSATZE:
        qnn = QNN(n, 3, ansatz, dtype=torch.float64, seed=5)
        expected = reference.probabilities(ansatz, qnn.weights.detach().numpy(), n)
        np.testing.assert_allclose(qnn().detach().numpy(), expected, atol=1e-12)


def test_identical_entangling_layers_share_one_index_tensor():
    qnn = QNN(8, 5, "ry-cnot-ring")
    perms = [s for s in qnn._fast.steps if type(s).__name__ == "_Perm"]
    assert len(perms) == 5 and len({id(s.index) for s in perms}) == 1
    assert perms[0].index.dtype == torch.int32
    cz = QNN(8, 5, "ry-rz-cz")
    diags = [s for s in cz._fast.steps if type(s).__name__ == "_Diag"]
    assert len(diags) == 5 and len({id(s.signs) for s in diags}) == 1


def test_functional_call_is_differentiable_on_the_fast_path():
    qnn = QNN(5, 2, "u3-cu3-ring", dtype=torch.float64)
    theta = torch.zeros(2, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    probs = torch.func.functional_call(qnn, {"weights": theta}, ())
    assert probs[0].item() == pytest.approx(1.0)
    probs[0].backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()
    # a second forward before the backward of the first does not disturb it
    p1 = qnn()
    p2 = qnn()
    (p1.sum() + p2[3]).backward()


def test_a_user_ansatz_runs_on_the_fast_path():
    class Mixed(Ansatz):
        name = "test-fast-mixed"

        def weight_shape(self, n, depth):
            return (depth, 3, n)

        def operations(self, n, depth):
            ops = []
            for l in range(depth):
                base = l * 3 * n
                ops += [Op("H", (k,)) for k in range(n)]
                ops += [Op("RX", (k,), (base + k,)) for k in range(n)]
                ops += [Op("CRZ", (k, (k + 2) % n), (base + n + k,)) for k in range(n)]
                ops += [Op("CZ", (0, n - 1)), Op("X", (1,))]
                ops += [Op("CRX", (n - 1 - k, k), (base + 2 * n + k,)) for k in range(n // 2)]
                ops += [Op("CNOT", (n - 1, 0))]
            return ops

    register_ansatz(Mixed(), overwrite=True)
    for n in (3, 6, 8):
        fast, ref = _pair(n, 2, "test-fast-mixed", seed=n)
        assert fast.method == "adjoint"
        proj = torch.randn(2**n, dtype=torch.float64)
        pf, pr = fast(), ref()
        torch.testing.assert_close(pf, pr, atol=1e-10, rtol=0)
        (pf @ proj).backward()
        (pr @ proj).backward()
        torch.testing.assert_close(fast.weights.grad, ref.weights.grad, atol=1e-10, rtol=0)


def test_unknown_method_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="adjoint"):
        QNN(3, 1, method="magic")


def test_adjoint_memory_estimate_is_flat_in_depth():
    ops = lambda d: QNN(4, d, "ry-cnot-ring")._ops  # noqa: E731
    a = estimate_circuit_bytes(ops(2), 20, torch.float32, method="adjoint")
    b = estimate_circuit_bytes(ops(50), 20, torch.float32, method="adjoint")
    assert a == b
    assert estimate_circuit_bytes(ops(50), 20, torch.float32) > 10 * a
    assert math.isfinite(a)
