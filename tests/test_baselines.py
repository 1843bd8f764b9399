"""Matched-budget classical baselines behind the same wrapper."""

import math

import numpy as np
import pytest
import torch

import reference
from models import PaperCNN
from qtrain import QTConfig, QuantumTrain, cli
from qtrain.baselines import (
    FixedProbabilities,
    LowRankBorn,
    SubspaceGenerator,
    TensorTrainBorn,
    fwht,
    low_rank_for_budget,
    no_entanglement,
    tt_bond_for_budget,
)
from qtrain.checkpoint import read_checkpoint_meta
from qtrain.circuits import QNN, get_ansatz

GENERATORS = ["fixed-random", "uniform", "no-entanglement", "tensor-train", "low-rank", "subspace"]


@pytest.mark.parametrize("depth", [1, 16])
def test_each_baseline_has_the_qt_budget_or_the_nearest_achievable(depth):
    qt = QuantumTrain(PaperCNN(), QTConfig(depth=depth))
    angles, mapping = qt.trainable_parameter_counts()["qnn"], qt.trainable_parameter_counts()["mapping"]
    assert angles == 78 * depth
    for name in GENERATORS:
        b = QuantumTrain(PaperCNN(), QTConfig(depth=depth, generator=name))
        c = b.trainable_parameter_counts()
        if name in ("fixed-random", "uniform"):
            assert b.n_trainable == mapping and c["qnn"] == 0
        elif name == "no-entanglement":
            assert b.n_trainable == qt.n_trainable and b.qnn.weights.shape == qt.qnn.weights.shape
        elif name == "subspace":
            assert b.n_trainable == qt.n_trainable and c["mapping"] == 0
        else:
            counts = {"tensor-train": lambda k: 2 * (2 * k + 11 * k * k), "low-rank": lambda k: 192 * k}[name]
            pick = (tt_bond_for_budget if name == "tensor-train" else low_rank_for_budget)(13, angles)
            # nearest achievable: no other size is closer to the QNN's angle count
            assert all(abs(counts(pick) - angles) <= abs(counts(k) - angles) for k in range(1, 60))
            assert b.n_trainable == counts(pick) + mapping
        x = torch.randn(2, 1, 28, 28)
        b(x).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())


def test_mapping_initialisation_matches_the_qt_run():
    qt = QuantumTrain(PaperCNN(), QTConfig(depth=2, seed=5)).generator.mapping.state_dict()
    tt = QuantumTrain(PaperCNN(), QTConfig(depth=2, seed=5, generator="tensor-train")).generator.mapping.state_dict()
    assert all(torch.equal(qt[k], tt[k]) for k in qt)


def test_no_entanglement_is_a_product_of_single_wire_states():
    n = 4
    qnn = QNN(n, 3, no_entanglement(get_ansatz("u3-cu3-ring")), dtype=torch.float64, seed=1)
    w = qnn.weights.detach().numpy()
    wires = []
    for k in range(n):
        psi = np.array([1, 0], dtype=complex)
        for l in range(3):
            psi = reference.u3(*w[l, 0, k]) @ psi
            psi = reference.u3(*w[l, 1, (k - 1) % n]) @ psi  # the CU3 controlled by k-1 targets k
        wires.append(np.abs(psi) ** 2)
    expected = wires[0]
    for p in wires[1:]:
        expected = np.kron(expected, p)
    np.testing.assert_allclose(qnn().detach().numpy(), expected, atol=1e-12)
    assert not any(op.gate in ("CNOT", "CZ", "CU3") for op in no_entanglement(get_ansatz("ry-cnot-ring")).operations(3, 2))


def test_born_machines_are_distributions_with_a_closed_form():
    g = torch.Generator().manual_seed(0)
    tt = TensorTrainBorn(3, 2, generator=g, dtype=torch.float64)
    c = [t.detach().numpy() for t in tt.cores]
    psi = np.array([(c[0][:, b0] @ c[1][:, b1] @ c[2][:, b2]).item() for b0 in (0, 1) for b1 in (0, 1) for b2 in (0, 1)])
    np.testing.assert_allclose(tt().detach().numpy(), psi**2 / (psi**2).sum(), atol=1e-12)
    lr = LowRankBorn(3, 2, generator=g, dtype=torch.float64)
    psi = (lr.u @ lr.v.T).detach().numpy().reshape(-1)
    np.testing.assert_allclose(lr().detach().numpy(), psi**2 / (psi**2).sum(), atol=1e-12)


def test_fwht_equals_the_hadamard_matrix_and_subspace_starts_at_w0():
    x = torch.randn(3, 8, dtype=torch.float64)
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    np.testing.assert_allclose(fwht(x).numpy(), x.numpy() @ h.T, atol=1e-12)
    w0 = torch.randn(100)
    sub = SubspaceGenerator(w0, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sub(), w0)
    with torch.no_grad():
        sub.z[3] = 1.0
    assert 0.5 < float((sub() - w0).detach().norm()) <= 1.0 + 1e-6


def test_fixed_random_vector_is_identical_across_steps_and_resumes(tmp_path):
    fixed = FixedProbabilities(5, "fixed-random", generator=torch.Generator().manual_seed(3))
    assert math.isclose(float(fixed().sum()), 1.0, rel_tol=1e-6) and torch.equal(fixed(), fixed())
    out = tmp_path / "run"
    args = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "2", "--batch-size", "32",
            "--no-progress", "--no-classical", "--out", str(out), "--generator", "fixed-random"]
    assert cli.main([*args, "--epochs", "1"]) == 0
    from safetensors.torch import load_file

    first = load_file(str(out / "checkpoint-qt.safetensors"))["model.generator.source.probs"]
    assert cli.main([*args, "--epochs", "2", "--resume"]) == 0
    assert read_checkpoint_meta(out / "checkpoint-qt.safetensors")["epoch"] == 2
    second = load_file(str(out / "checkpoint-qt.safetensors"))["model.generator.source.probs"]
    assert torch.equal(first, second)


def test_unknown_generator_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Invalid `generator` 'random'. Must be one of \['qnn', 'fixed-random'"):
        QTConfig(generator="random")
