"""The matrix-product-state mapping (``mapping="mps"``)."""

import pytest
import torch

import qtrain
from reference import generator_gradcheck
from qtrain.mapping import MPSMapping, mps_parameter_count


@pytest.mark.parametrize("n,bond,c", [(2, 1, 1), (5, 3, 2), (14, 8, 1), (9, 4, 16)])
def test_trainable_count_matches_the_formula(n, bond, c):
    g = MPSMapping(n, bond, n_outputs=c)
    assert sum(p.numel() for p in g.parameters()) == mps_parameter_count(n, bond, c) == (
        2 * bond + 2 * bond**2 * (n - 2) + 2 * bond * c)


def test_contraction_equals_a_site_by_site_loop():
    g = MPSMapping(5, 3, n_outputs=2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = torch.randn(6, 5, dtype=torch.float64)
    first, middle, last = g.net.first, g.net.middle, g.net.last
    expect = []
    for row in rows:  # independent reference: one row at a time, one site at a time
        phi = [torch.stack([z, 1 - z]) for z in row]
        v = phi[0][0] * first[0] + phi[0][1] * first[1]
        for k, core in enumerate(middle):
            v = v @ (phi[k + 1][0] * core[:, 0, :] + phi[k + 1][1] * core[:, 1, :])
        expect.append(v @ (phi[-1][0] * last[:, 0, :] + phi[-1][1] * last[:, 1, :]))
    torch.testing.assert_close(g.rows(rows), torch.stack(expect), rtol=1e-12, atol=1e-12)


def test_qt_with_the_mps_mapping_counts_generates_and_has_exact_gradients():
    net = torch.nn.Linear(6, 4)  # M = 28, N = 5
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, mapping="mps", mps_bond=2, dtype="float64"))
    assert qt.trainable_parameter_counts()["mapping"] == mps_parameter_count(6, 2)
    assert generator_gradcheck(qt.generator, 28)


def test_mps_mapping_in_row_chunks_equals_one_pass():
    net = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Linear(20, 7))
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, mapping="mps", mps_bond=3, chunk_size=2, dtype="float64"))
    params = [p for p in qt.generator.parameters() if p.requires_grad]
    w = qt.generator()
    g = torch.autograd.grad(w.pow(2).sum(), params)
    qt.generator.chunk_rows = 40
    w2 = qt.generator()
    g2 = torch.autograd.grad(w2.pow(2).sum(), params)
    torch.testing.assert_close(w2, w, rtol=0, atol=1e-12)
    for a, b in zip(g2, g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_mps_config_is_validated():
    with pytest.raises(ValueError, match="mps_bond"):
        qtrain.QTConfig(mapping="mps", mps_bond=0)
    with pytest.raises(ValueError, match="mapping='mps' is set by `mps_bond`"):
        qtrain.QTConfig(mapping="mps", mapping_hidden=(4,))
