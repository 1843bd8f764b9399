"""The fused adjoint simulator (the QNN default) against the autograd reference
simulator and the dense reference: values, gradients, dtypes, user ansaetze."""

import math
import random

import numpy as np
import pytest
import reference
import torch

from qtrain.circuits import QNN, Ansatz, Op, register_ansatz
from qtrain.circuits import fast as fast_mod
from qtrain.circuits.fast import _Block, _Ctrl, _Fixed2, compile_fast, fast_probabilities
from qtrain.circuits.gates import GATES
from qtrain.circuits.measure import exact_probs
from qtrain.circuits.qnn import estimate_circuit_bytes
from qtrain.circuits.statevector import compile_ops, run

PAPER_ANSATZE = ["u3-cu3-ring", "ry-cnot-ring", "ry-cnot-chain", "ry-rz-cz"]


def _pair(n, depth, ansatz, dtype=torch.float64, seed=0, **kw):
    fast = QNN(n, depth, ansatz, dtype=dtype, seed=seed, **kw)
    ref = QNN(n, depth, ansatz, dtype=dtype, seed=seed, method="autograd")
    return fast, ref


METHODS = ["stored", "adjoint", "autograd"]


def _check_against_reference(ops, n, n_weights, method, *, max_block=None, seed=0, atol=1e-10):
    """fast_probabilities(method) == the autograd reference, values and gradients (float64)."""
    ref = compile_ops(ops, n, n_weights)
    prog = compile_fast(ops, n, n_weights, max_block=max_block)
    gen = torch.Generator().manual_seed(seed)
    theta = (torch.rand(n_weights, dtype=torch.float64, generator=gen) * 2 - 1) * math.pi
    proj = torch.randn(2**n, dtype=torch.float64, generator=gen)
    t1, t2 = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    pf = fast_probabilities(prog, t1, method=method)
    pr = exact_probs(run(ref, t2))
    torch.testing.assert_close(pf, pr, atol=atol, rtol=0)
    if not pr.requires_grad:  # no parametric gate: nothing to differentiate
        return
    (pf @ proj).backward()
    (pr @ proj).backward()
    torch.testing.assert_close(t1.grad, t2.grad, atol=atol, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_fast_probabilities_and_gradients_equal_the_autograd_reference(ansatz, n, method):
    rng = random.Random(1000 * n + len(ansatz))
    depth = rng.randint(1, 4)
    fast, ref = _pair(n, depth, ansatz, seed=rng.randint(0, 10**6))
    assert fast.method == "adjoint" and ref.method == "autograd"
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    pf = fast_probabilities(fast._fast, fast.weights, method=method)
    pr = ref()
    torch.testing.assert_close(pf, pr, atol=1e-10, rtol=0)
    (pf @ proj).backward()
    (pr @ proj).backward()
    torch.testing.assert_close(fast.weights.grad, ref.weights.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_block", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_every_block_size_gives_the_same_answer(ansatz, max_block, method):
    n, depth = 7, 3
    ref = QNN(n, depth, ansatz, dtype=torch.float64, seed=4, method="autograd")
    _check_against_reference(ref._ops, n, ref.weights.numel(), method, max_block=max_block, seed=max_block)


_RANDOM_GATES = ["H", "X", "RX", "RY", "RZ", "U3", "CNOT", "CZ", "CRX", "CRY", "CRZ", "CU3"]


def _random_ops(rng, n, n_gates, gates=_RANDOM_GATES):
    ops, k = [], 0
    for _ in range(n_gates):
        gate = rng.choice([g for g in gates if n >= 2 or GATES[g].n_wires == 1])
        spec = GATES[gate]
        wires = tuple(rng.sample(range(n), spec.n_wires))
        ops.append(Op(gate, wires, tuple(range(k, k + spec.n_params))))
        k += spec.n_params
    return ops, max(k, 1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", range(1, 8))
def test_random_circuits_equal_the_reference(n, method):
    """Any gate on any wires in any order: long-range and in-window two-qubit gates in both
    directions, repeated single-qubit gates, every window width."""
    rng = random.Random(77 + n)
    for trial in range(6):
        gates = _RANDOM_GATES if trial % 2 == 0 else ["RY", "CNOT", "CZ", "CRY", "H"]  # real ones too
        ops, nw = _random_ops(rng, n, rng.randint(1, 6 * n))
        for max_block in (1, 2, 3, 5):
            _check_against_reference(ops, n, nw, method, max_block=max_block, seed=trial)
        ops, nw = _random_ops(rng, n, rng.randint(1, 6 * n), gates)
        _check_against_reference(ops, n, nw, method, seed=trial)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_fast_gradient_passes_float64_gradcheck(ansatz, n, method):
    qnn = QNN(n, 2, ansatz, dtype=torch.float64, seed=11)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def f(theta):
        return fast_probabilities(qnn._fast, theta, method=method) @ proj

    assert torch.autograd.gradcheck(f, (qnn.weights.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("permuted", [False, True])
def test_kronecker_builder_matches_torch_kron_and_passes_gradcheck(g, dtype, permuted):
    gen = torch.Generator().manual_seed(g)
    f = torch.randn(3, g, 2, 2, dtype=dtype, generator=gen)
    perm = torch.randperm(2**g, generator=gen) if permuted else None
    idx = fast_mod._kron_index(g, perm, "cpu")
    inv = torch.argsort(idx)
    expected = []
    for row in f:
        m = row[0]
        for w in range(1, g):
            m = torch.kron(m, row[w])
        expected.append(m if perm is None else m[perm])
    torch.testing.assert_close(fast_mod._Kron.apply(f, idx, inv), torch.stack(expected), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: fast_mod._Kron.apply(x, idx, inv), (f.requires_grad_(),))


def test_ry_builder_matches_the_gate_and_passes_gradcheck():
    theta = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fast_mod._RY.apply(theta), GATES["RY"].matrix(theta[:, None]), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(fast_mod._RY.apply, (theta.requires_grad_(),))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_float32_probabilities_are_within_1e6_of_float64(ansatz, method):
    n = 10
    q64 = QNN(n, 6, ansatz, dtype=torch.float64, seed=2)
    q32 = QNN(n, 6, ansatz, dtype=torch.float32)
    p32 = fast_probabilities(q32._fast, q64.weights.detach().float(), method=method)
    assert p32.dtype == torch.float32
    assert float((p32.double() - q64().detach()).abs().max()) < 1e-6


@pytest.mark.parametrize("ansatz", PAPER_ANSATZE)
def test_adjoint_gradients_of_wide_circuits_equal_the_reference(ansatz):
    """N = 12 in windows of 3: the un-computing backward on states with 128 leading slabs
    before a middle window (the slab products, and the complex chunks), and u3-cu3-ring's
    wrap-around CU3 applied in place to the stacked state and adjoint."""
    ref = QNN(12, 2, ansatz, dtype=torch.float64, seed=8, method="autograd")
    prog = compile_fast(ref._ops, 12, ref.weights.numel(), max_block=3)
    assert any(s.lo >= 7 and s.lo + s.g < 12 for s in prog.steps if isinstance(s, _Block))
    assert (ansatz == "u3-cu3-ring") == any(isinstance(s, _Ctrl) for s in prog.steps)
    _check_against_reference(ref._ops, 12, ref.weights.numel(), "adjoint", max_block=3, seed=len(ansatz))


def test_fast_path_matches_the_dense_reference_with_long_range_gates():
    n = 7  # blocks, the ring's wrap-around gate in place, shared permutations
    for ansatz in PAPER_ANSATZE:
        qnn = QNN(n, 3, ansatz, dtype=torch.float64, seed=5)
        expected = reference.probabilities(ansatz, qnn.weights.detach().numpy(), n)
        np.testing.assert_allclose(qnn().detach().numpy(), expected, atol=1e-12)


def test_ring_layers_fuse_into_window_blocks_without_state_sized_tables():
    """N = 13, windows of 5: each layer is three blocks (rotations + the chain of adjacent
    two-qubit gates) and the wrap-around gate on its own; all blocks form one class."""
    for ansatz, wrap in (("u3-cu3-ring", _Ctrl), ("ry-cnot-ring", _Fixed2)):
        qnn = QNN(13, 4, ansatz)
        prog = compile_fast(qnn._ops, 13, qnn.weights.numel(), max_block=5)
        kinds = [type(s) for s in prog.steps]
        assert kinds == [_Block, _Block, _Block, wrap] * 4
        assert [(s.lo, s.g) for s in prog.steps[:3]] == [(0, 5), (4, 5), (8, 5)]
        assert len(prog.classes) == 1 and prog.classes[0].op_rows.shape[0] == 12
    assert QNN(13, 4, "ry-cnot-ring")._fast.classes[0].fixed_tail  # the CNOT chain: one constant
    big = [t for t in vars(QNN(16, 2, "ry-rz-cz")._fast).values() if isinstance(t, torch.Tensor)]
    assert all(t.numel() < 2**16 for t in big)


@pytest.mark.parametrize("n", [3, 9, 16])
def test_auto_method_picks_autograd_for_small_and_adjoint_for_large_circuits(n, monkeypatch):
    qnn = QNN(n, 2, "ry-rz-cz", dtype=torch.float64, seed=0)  # a circuit the compiled kernel does not run
    calls = []
    original = fast_mod._AdjointProbs.apply
    monkeypatch.setattr(fast_mod._AdjointProbs, "apply", lambda *a: calls.append(1) or original(*a))
    qnn().sum().backward()
    assert bool(calls) == (n > fast_mod.AUTOGRAD_MAX_N)


def test_unknown_fast_method_is_rejected():
    qnn = QNN(3, 1)
    with pytest.raises(ValueError, match="adjoint"):
        fast_probabilities(qnn._fast, qnn.weights, method="magic")


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
    for n, method in ((3, "auto"), (6, "adjoint"), (8, "autograd"), (8, "adjoint")):
        fast, ref = _pair(n, 2, "test-fast-mixed", seed=n)
        assert fast.method == "adjoint"
        proj = torch.randn(2**n, dtype=torch.float64)
        pf, pr = fast_probabilities(fast._fast, fast.weights, method=method), ref()
        torch.testing.assert_close(pf, pr, atol=1e-10, rtol=0)
        (pf @ proj).backward()
        (pr @ proj).backward()
        torch.testing.assert_close(fast.weights.grad, ref.weights.grad, atol=1e-10, rtol=0)


def test_unknown_method_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="adjoint"):
        QNN(3, 1, method="magic")


def test_adjoint_memory_estimate_is_flat_in_depth():
    ops = lambda d: QNN(4, d, "ry-cnot-ring")._ops
    a = estimate_circuit_bytes(ops(2), 20, torch.float32, method="adjoint")
    b = estimate_circuit_bytes(ops(50), 20, torch.float32, method="adjoint")
    assert a == b
    assert estimate_circuit_bytes(ops(50), 20, torch.float32) > 10 * a
    assert math.isfinite(a)


@pytest.mark.parametrize("method", METHODS)
def test_interleaved_forwards_and_repeated_backwards_agree(method):
    """Lent buffers: a second forward before the first backward, and a backward run twice
    (retain_graph), give the reference gradients every time."""
    n = 6
    qnn = QNN(n, 3, "u3-cu3-ring", dtype=torch.float64, seed=3)
    ref = QNN(n, 3, "u3-cu3-ring", dtype=torch.float64, seed=3, method="autograd")
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (ref() @ proj).backward()
    expected = ref.weights.grad
    theta1 = qnn.weights.detach().clone().requires_grad_()
    theta2 = (qnn.weights.detach() + 0.3).requires_grad_()
    l1 = fast_probabilities(qnn._fast, theta1, method=method) @ proj
    l2 = fast_probabilities(qnn._fast, theta2, method=method) @ proj
    l1.backward(retain_graph=True)
    torch.testing.assert_close(theta1.grad, expected, atol=1e-10, rtol=0)
    theta1.grad = None
    l2.backward()
    l1.backward()
    torch.testing.assert_close(theta1.grad, expected, atol=1e-10, rtol=0)
    t3 = theta2.detach().clone().requires_grad_()
    (torch.func.functional_call(ref, {"weights": t3}, ()) @ proj).backward()
    torch.testing.assert_close(theta2.grad, t3.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n", [4, 15])  # the stored backward, the kernel (or the adjoint one without it)
def test_higher_order_derivatives_are_refused_by_the_fast_path_and_given_by_the_reference(n):
    fast = QNN(n, 1, "ry-cnot-ring", seed=0, dtype=torch.float64)
    (g,) = torch.autograd.grad(fast().pow(2).sum(), fast.weights)  # first derivatives: fine
    assert torch.isfinite(g).all()
    with pytest.raises(RuntimeError, match="first derivatives only; build the QNN with method='autograd'"):
        torch.autograd.grad(fast().pow(2).sum(), fast.weights, create_graph=True)
    if n <= 4:
        ref = QNN(n, 1, "ry-cnot-ring", seed=0, dtype=torch.float64, method="autograd")
        (g2,) = torch.autograd.grad(ref().pow(2).sum(), ref.weights, create_graph=True)
        torch.testing.assert_close(g2, g)
        assert torch.autograd.grad(g2.sum(), ref.weights)[0].abs().sum() > 0
