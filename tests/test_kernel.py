"""The compiled RY + CNOT kernel against the autograd reference, finite differences and
the PyTorch fast path; its pattern matching; and the fallback when it cannot be built."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from qtrain import native
from qtrain.circuits import QNN, get_ansatz, kernel
from qtrain.circuits.ansatze import Op
from qtrain.circuits.fast import compile_fast, fast_probabilities, uses_kernel
from qtrain.circuits.measure import exact_probs
from qtrain.circuits.statevector import compile_ops, run

pytestmark = pytest.mark.skipif(not kernel.available(), reason="needs a C compiler (gcc); .ci/run installs one")


def _circuit(ansatz, n, depth):
    ops = get_ansatz(ansatz).operations(n, depth)
    return ops, n * depth * (6 if ansatz == "u3-cu3-ring" else 1)


def _theta(n_weights, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(n_weights, dtype=torch.float64, generator=gen) * 2 - 1) * math.pi).to(dtype)


def _kernel_and_reference(ansatz, n, depth, seed=0):
    ops, nw = _circuit(ansatz, n, depth)
    prog = compile_fast(ops, n, nw)
    theta = _theta(nw, seed)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    t1, t2 = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    pk = fast_probabilities(prog, t1, method="kernel")
    pr = exact_probs(run(compile_ops(ops, n, nw), t2))
    (pk @ proj).backward()
    (pr @ proj).backward()
    return pk, pr, t1.grad, t2.grad


def _check_float32(prog, theta, proj):
    """The kernel in float32 within 1e-6 of float64 (values) and 2e-5 (gradients); returns
    the float64 angles, their gradient filled."""
    t32, t64 = theta.float().requires_grad_(), theta.clone().requires_grad_()
    p32, p64 = fast_probabilities(prog, t32, method="kernel"), fast_probabilities(prog, t64, method="kernel")
    assert p32.dtype == torch.float32
    torch.testing.assert_close(p32.double(), p64, atol=1e-6, rtol=0)
    (p32.double() @ proj).backward()
    (p64 @ proj).backward()
    torch.testing.assert_close(t32.grad.double(), t64.grad, atol=2e-5, rtol=1e-4)
    return t64


def _check_finite_differences(prog, theta, proj, grad, every, eps=1e-6):
    """Central differences of ``proj . p(theta)`` against ``grad``, every ``every``-th angle."""
    for i in range(0, theta.numel(), every):
        e = torch.zeros_like(theta)
        e[i] = eps
        with torch.no_grad():
            up = fast_probabilities(prog, theta + e, method="kernel") @ proj
            down = fast_probabilities(prog, theta - e, method="kernel") @ proj
        assert float(grad[i]) == pytest.approx(float(up - down) / (2 * eps), abs=1e-8)


def test_the_pattern_matcher_finds_rings_and_chains_and_nothing_else():
    for ansatz, ring in (("ry-cnot-ring", True), ("ry-cnot-chain", False)):
        layers, found = kernel.match_layers(get_ansatz(ansatz).operations(9, 3), 9)
        assert found is ring and layers == [[9 * j + k for k in range(9)] for j in range(3)]
    for ansatz in ("u3-cu3-ring", "ry-rz-cz"):
        assert kernel.match_layers(get_ansatz(ansatz).operations(9, 3), 9) is None
    ops = get_ansatz("ry-cnot-ring").operations(9, 2)
    swapped = [ops[1], ops[0], *ops[2:]]  # RY on wire 1 before wire 0: not the form
    assert kernel.match_layers(swapped, 9) is None
    reversed_cnot = ops[:9] + [Op("CNOT", (1, 0))] + ops[10:]
    assert kernel.match_layers(reversed_cnot, 9) is None
    shared = [Op("RY", op.wires, (0,)) if op.gate == "RY" else op for op in ops]  # one angle everywhere: fine
    assert kernel.match_layers(shared, 9) == ([[0] * 9] * 2, True)
    assert kernel.match_layers(ops[:-1], 9) is None  # a ring missing its last CNOT in the last layer
    assert compile_fast(ops, 9, 18).kernel is not None
    assert compile_fast(get_ansatz("ry-cnot-ring").operations(7, 2), 7, 14).kernel is None  # below MIN_QUBITS


@pytest.mark.parametrize("ansatz", ["ry-cnot-ring", "ry-cnot-chain"])
@pytest.mark.parametrize(("n", "depth"), [(8, 1), (9, 3), (13, 4), (15, 2), (16, 3), (17, 2)])
def test_kernel_equals_the_reference_in_float64(ansatz, n, depth):
    """N <= 14: the whole state is one block; 15-17: 2-8 blocks and the tile passes."""
    pk, pr, gk, gr = _kernel_and_reference(ansatz, n, depth, seed=n + depth)
    torch.testing.assert_close(pk, pr, atol=1e-12, rtol=0)
    torch.testing.assert_close(gk, gr, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("low", "n"), [(5, 8), (5, 10), (6, 11), (4, 12), (7, 9)])
def test_small_blocks_and_wide_tiles_equal_the_reference(low, n, monkeypatch):
    """Blocks of 2^low amplitudes make every layout case reachable at small N: many blocks,
    tiles wider than a block (the row length clamped to two vectors), a single tile."""
    monkeypatch.setitem(kernel._LOW_BITS, torch.float64, low)
    for ansatz in ("ry-cnot-ring", "ry-cnot-chain"):
        pk, pr, gk, gr = _kernel_and_reference(ansatz, n, 3, seed=low * n)
        torch.testing.assert_close(pk, pr, atol=1e-12, rtol=0)
        torch.testing.assert_close(gk, gr, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n", [10, 16, 17])
def test_float32_stays_within_1e6_of_float64(n):
    ops, nw = _circuit("ry-cnot-ring", n, 6)
    prog = compile_fast(ops, n, nw)
    theta = _theta(nw, n)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    _check_float32(prog, theta, proj)


def test_gradients_match_finite_differences():
    n, depth = 9, 2
    ops, nw = _circuit("ry-cnot-ring", n, depth)
    prog = compile_fast(ops, n, nw)
    theta = _theta(nw, 3).requires_grad_()
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (fast_probabilities(prog, theta, method="kernel") @ proj).backward()
    _check_finite_differences(prog, theta.detach(), proj, theta.grad, every=5)


def test_results_do_not_depend_on_the_thread_count():
    n = 17  # 4 blocks and 4 tiles (float32): the passes are split across threads
    ops, nw = _circuit("ry-cnot-ring", n, 3)
    prog = compile_fast(ops, n, nw)
    proj = torch.randn(2**n, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    out = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            theta = _theta(nw, 0, torch.float32).requires_grad_()
            p = fast_probabilities(prog, theta, method="kernel")
            (p @ proj).backward()
            out.append((p.detach(), theta.grad))
    finally:
        torch.set_num_threads(threads)
    for p, g in out[1:]:
        assert torch.equal(p, out[0][0]) and torch.equal(g, out[0][1])


def test_a_retained_graph_gives_the_same_gradient_twice():
    qnn = QNN(10, 3, "ry-cnot-ring", dtype=torch.float64, seed=0)
    loss = (qnn() ** 2).sum()
    (g1,) = torch.autograd.grad(loss, qnn.weights, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, qnn.weights)  # psi was un-computed by the first: recomputed
    torch.testing.assert_close(g1, g2, atol=1e-14, rtol=0)


def test_the_qnn_runs_matched_circuits_through_the_kernel(monkeypatch):
    calls = []
    original = kernel._KernelProbs.apply
    monkeypatch.setattr(kernel._KernelProbs, "apply", lambda *a: calls.append(1) or original(*a))
    ring, other, small = QNN(10, 2, "ry-cnot-ring", seed=0), QNN(10, 2, "ry-rz-cz", seed=0), QNN(5, 2, "ry-cnot-ring")
    for qnn in (ring, other, small):
        qnn().sum().backward()
    assert len(calls) == 1 and uses_kernel(ring._fast, ring.weights)
    fast = fast_probabilities(ring._fast, ring.weights.detach(), method="adjoint")
    torch.testing.assert_close(ring().detach(), fast, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="not one the compiled kernel runs"):
        fast_probabilities(other._fast, other.weights, method="kernel")


def test_second_derivatives_are_refused():
    qnn = QNN(9, 1, "ry-cnot-ring", dtype=torch.float64, seed=0)
    with pytest.raises(RuntimeError, match="first derivatives only; build the QNN with method='autograd'"):
        torch.autograd.grad(qnn().pow(2).sum(), qnn.weights, create_graph=True)


def test_qtrain_kernel_0_turns_it_off(monkeypatch):
    qnn = QNN(9, 2, "ry-cnot-ring", seed=0)
    on = qnn().detach()
    monkeypatch.setenv("QTRAIN_KERNEL", "0")
    assert not kernel.available() and not uses_kernel(qnn._fast, qnn.weights)
    torch.testing.assert_close(qnn().detach(), on, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="unavailable"):
        fast_probabilities(qnn._fast, qnn.weights, method="kernel")


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_why", [])
    monkeypatch.setenv("QTRAIN_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="unavailable, using the PyTorch path"):
        qnn = QNN(9, 2, "ry-cnot-ring", seed=0)  # (its memory check asks which simulator will run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        p = qnn()
    assert not kernel.available() and not uses_kernel(qnn._fast, qnn.weights)
    assert p.grad_fn is not None and abs(float(p.detach().sum()) - 1) < 1e-5
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left in the cache


def test_the_cache_is_reused(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("QTRAIN_KERNEL_CACHE", str(tmp_path))
    assert kernel.available(torch.float32)
    built = sorted(tmp_path.glob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_libs", {})
    assert kernel.available(torch.float32) and built[0].stat().st_mtime_ns == stamp



@pytest.mark.parametrize("cache", ["missing", "unwritable"])
def test_an_unwritable_cache_builds_into_a_private_temp_folder(cache, monkeypatch, tmp_path):
    """A cache that cannot be created (under a file) or written (/proc exists, and takes no
    files even from root): the library is built in a fresh mode-0700 folder of this process."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("QTRAIN_KERNEL_CACHE", str(blocker / "cache") if cache == "missing" else "/proc")
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path))
    assert kernel.available(torch.float32)
    (folder,) = tmp_path.glob("qtrain-kernel-*")
    assert len(list(folder.glob("*.so"))) == 1 and folder.stat().st_mode & 0o077 == 0


def test_block_sizes_the_kernel_cannot_take_are_refused(monkeypatch):
    monkeypatch.setitem(kernel._LOW_BITS, torch.float64, 3)  # one vector of float64 per block
    ops, nw = _circuit("ry-cnot-ring", 9, 2)
    with pytest.raises(ValueError, match="refused its arguments"):
        fast_probabilities(compile_fast(ops, 9, nw), _theta(nw, 0), method="kernel")


@pytest.mark.parametrize(("low", "n"), [(5, 8), (5, 11), (6, 10), (8, 12)])
def test_small_blocks_in_float32(low, n, monkeypatch):
    monkeypatch.setitem(kernel._LOW_BITS, torch.float32, low)
    ops, nw = _circuit("ry-cnot-ring", n, 4)
    prog = compile_fast(ops, n, nw)
    theta = _theta(nw, n)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(low))
    t32, t64 = theta.float().requires_grad_(), theta.clone().requires_grad_()
    p32 = fast_probabilities(prog, t32, method="kernel")
    p64 = exact_probs(run(compile_ops(ops, n, nw), t64))
    torch.testing.assert_close(p32.double(), p64, atol=1e-6, rtol=0)
    (p32.double() @ proj).backward()
    (p64 @ proj).backward()
    torch.testing.assert_close(t32.grad.double(), t64.grad, atol=2e-5, rtol=1e-4)


def test_the_memory_estimate_counts_what_runs(monkeypatch):
    from qtrain import QTConfig
    from qtrain.circuits.qnn import estimate_circuit_bytes, simulation_method
    from qtrain.model import estimate_memory

    ops, _ = _circuit("ry-cnot-ring", 22, 10)
    assert simulation_method(ops, 22, torch.float32) == "kernel"
    assert simulation_method(ops, 22, torch.float32, "cuda") == "adjoint"  # the kernel is CPU-only
    assert simulation_method(_circuit("u3-cu3-ring", 22, 2)[0], 22, torch.float32) == "adjoint"
    kern = estimate_circuit_bytes(ops, 22, torch.float32, method="kernel")
    assert 71 * 2**20 < kern < estimate_circuit_bytes(ops, 22, torch.float32, method="adjoint") / 2  # 71 MiB measured
    cfg = QTConfig(depth=10, ansatz="ry-cnot-ring", mapping="paper")
    on = estimate_memory(cfg, 2**22)
    monkeypatch.setenv("QTRAIN_KERNEL", "0")
    assert simulation_method(ops, 22, torch.float32) == "adjoint"
    assert estimate_memory(cfg, 2**22) > on


# --- the u3-cu3-ring kernel (one cache-resident block, N <= 14) ---------------------------


def test_the_u3_matcher_finds_the_papers_ring_only():
    ops = get_ansatz("u3-cu3-ring").operations(9, 2)
    u, c = kernel.match_u3_layers(ops, 9)
    assert len(u) == len(c) == 2 and u[1][0] == [54, 55, 56] and c[0][8] == [51, 52, 53]
    assert kernel.match(ops, 9)[0] == "u3" and kernel.match(ops, 7) is None
    assert kernel.match_u3_layers(ops[:-1], 9) is None
    assert kernel.match_u3_layers(ops[:9] + [Op("CU3", (1, 0), (0, 1, 2))] + ops[10:], 9) is None
    assert kernel.match_u3_layers(get_ansatz("ry-cnot-ring").operations(9, 2), 9) is None


@pytest.mark.parametrize(("n", "depth"), [(8, 1), (8, 3), (10, 2), (13, 2), (14, 1)])
def test_u3_kernel_equals_the_reference_in_float64(n, depth):
    pk, pr, gk, gr = _kernel_and_reference("u3-cu3-ring", n, depth, seed=n * depth)
    torch.testing.assert_close(pk, pr, atol=1e-12, rtol=0)
    torch.testing.assert_close(gk, gr, atol=1e-10, rtol=0)


def test_u3_kernel_in_float32_and_against_finite_differences():
    n = 9
    ops, nw = _circuit("u3-cu3-ring", n, 3)
    prog = compile_fast(ops, n, nw)
    theta = _theta(nw, 4)
    proj = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t64 = _check_float32(prog, theta, proj)
    _check_finite_differences(prog, theta, proj, t64.grad, every=17)


def test_the_qnn_runs_u3_rings_through_the_kernel_up_to_its_size(monkeypatch):
    calls = []
    original = kernel._KernelU3Probs.apply
    monkeypatch.setattr(kernel._KernelU3Probs, "apply", lambda *a: calls.append(1) or original(*a))
    small, large = QNN(10, 2, seed=0, dtype=torch.float64), QNN(kernel.U3_MAX_QUBITS[torch.float64] + 1, 1, seed=0,
                                                                  dtype=torch.float64)
    for qnn in (small, large):
        loss = (qnn() ** 2).sum()
        (g1,) = torch.autograd.grad(loss, qnn.weights, retain_graph=True)
        (g2,) = torch.autograd.grad(loss, qnn.weights)  # a retained graph: psi recomputed
        torch.testing.assert_close(g1, g2, atol=1e-13, rtol=0)
    assert len(calls) == 1 and uses_kernel(small._fast, small.weights) and not uses_kernel(large._fast, large.weights)
    ref = fast_probabilities(small._fast, small.weights.detach(), method="adjoint")
    torch.testing.assert_close(small().detach(), ref, atol=1e-12, rtol=0)
