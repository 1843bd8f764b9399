"""Chunked generation (``QTConfig(chunk_size=C)``: C weights per basis state) and the
million-weight target it exists for."""

import pytest
import torch

import qtrain
from reference import generator_gradcheck
from qtrain.mapping import bit_features
from qtrain.model import estimate_memory
from qtrain.models import build_model


def _net():
    return torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 7))  # M = 767


@pytest.mark.parametrize("chunk", [1, 5, 16, 767, 1000])
def test_qubits_mapping_width_and_counts_follow_the_chunk_size(chunk, capsys):
    qt = qtrain.QuantumTrain(_net(), qtrain.QTConfig(depth=2, ansatz="ry-cnot-ring", chunk_size=chunk,
                                                     mapping_hidden=(8,)))
    rows = -(-767 // chunk)
    n = max(1, (rows - 1).bit_length())
    assert qt.n_qubits == n and qt.generator.n_rows == rows
    assert qt.generator.mapping.net[-1].out_features == chunk
    # ry-cnot-ring: N angles per block; mapping (N+1) -> 8 -> C, no output bias for "mlp"
    assert qt.n_trainable == 2 * n + (n + 1) * 8 + 8 + 8 * chunk
    assert qt(torch.randn(4, 30)).shape == (4, 7)
    qt.print_trainable_parameters()
    out = capsys.readouterr().out
    assert (f"chunk C: {chunk:,}" in out) == (chunk > 1)


@pytest.mark.parametrize("mapping", ["mlp", "paper"])  # paper: evaluated as its collapsed affine map
def test_each_basis_state_emits_its_chunk_of_consecutive_weights_by_hand(mapping):
    chunk = 6
    qt = qtrain.QuantumTrain(_net(), qtrain.QTConfig(depth=1, chunk_size=chunk, weight_scale="none", dtype="float64",
                                                     centering="global", mapping=mapping))  # centred over all M
    gen = qt.generator
    with torch.no_grad():
        x = gen.transform(gen.source())
        rows = torch.cat([bit_features(qt.n_qubits, gen.n_rows, dtype=torch.float64), x[:, None]], 1)
        expect = torch.stack([gen.mapping.net(r) for r in rows])  # row r -> weights rC .. rC + C - 1
        expect = expect.reshape(-1)[:767]
        expect = expect - expect.mean()
        got = gen()
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-12)
    w = qt.generate_weights()
    torch.testing.assert_close(w["0.weight"].reshape(-1)[6:12].double(), expect[6:12])  # row 1's chunk


@pytest.mark.parametrize("chunk_rows", [50, 64])  # 64: a power of two, the split-bit paths
@pytest.mark.parametrize("mapping", ["mlp", "paper"])
def test_chunk_size_generation_in_row_chunks_equals_one_pass(mapping, chunk_rows):
    qt = qtrain.QuantumTrain(_net(), qtrain.QTConfig(depth=2, chunk_size=4, mapping=mapping, dtype="float64"))
    gen = qt.generator
    params = [p for p in gen.parameters() if p.requires_grad]
    probe = torch.linspace(-1, 1, 767, dtype=torch.float64)
    w_one = gen()
    g_one = torch.autograd.grad(w_one @ probe, params)
    gen.chunk_rows = chunk_rows  # 192 rows: 3-4 chunks, the last partial
    w_chunk = gen()
    g_chunk = torch.autograd.grad(w_chunk @ probe, params)
    torch.testing.assert_close(w_chunk, w_one, rtol=0, atol=1e-12)
    for a, b in zip(g_chunk, g_one):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mapping", ["mlp", "paper"])
@pytest.mark.parametrize("chunk_rows", [None, 3, 4])
def test_chunked_generator_gradient_matches_finite_differences(chunk_rows, mapping):
    net = torch.nn.Linear(6, 4)  # M = 28; C = 3 -> 10 rows, N = 4
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, chunk_size=3, mapping=mapping, dtype="float64",
                                                  learnable_transform=True, **(
                                                      {"mapping_hidden": (3,)} if mapping == "mlp" else {})))
    if chunk_rows:
        qt.generator.chunk_rows = chunk_rows
    assert generator_gradcheck(qt.generator, 28)


def test_chunked_model_saves_loads_and_merges(tmp_path):
    torch.manual_seed(0)
    qt = qtrain.QuantumTrain(_net(), qtrain.QTConfig(depth=2, chunk_size=8))
    qt.save_pretrained(tmp_path)
    torch.manual_seed(1)
    again = qtrain.QuantumTrain.from_pretrained(_net(), tmp_path)
    x = torch.randn(5, 30)
    torch.testing.assert_close(again(x), qt(x))
    torch.testing.assert_close(qt.merge_and_unload()(x), qt(x), rtol=1e-6, atol=1e-6)


def test_too_few_qubits_for_the_rows_is_refused():
    with pytest.raises(ValueError, match="chunk_size=16 .48 rows.; need >= 6"):
        qtrain.QuantumTrain(_net(), qtrain.QTConfig(depth=1, chunk_size=16, n_qubits=5))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _peak() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def test_resnet18_sized_target_trains_a_step_within_the_memory_estimate():
    torch.manual_seed(0)
    qt = qtrain.QuantumTrain(build_model("resnet18"), qtrain.QTConfig(depth=2, chunk_size=256))
    assert qt.n_generated == 11_173_962 and qt.n_qubits == 16
    estimate = estimate_memory(qt.config, qt.n_generated, qt.n_qubits)
    base = _rss()
    try:
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS (Linux)
            f.write("5")
        measured = True
    except OSError:
        measured = False
    weights = qt.generate_weights()
    sum(w.pow(2).sum() for w in weights.values()).backward()
    if measured:
        assert _peak() - base <= estimate, (_peak() - base, estimate)
    del weights
    qt.zero_grad()
    opt = torch.optim.Adam(qt.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(qt(x), y)
    loss.backward()
    grads = [p.grad for p in qt.parameters()]
    assert torch.isfinite(loss) and all(g is not None and g.abs().sum() > 0 for g in grads)
    opt.step()
