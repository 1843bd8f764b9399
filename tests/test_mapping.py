"""Transform, bit features, mapping model, and the whole generator's gradient."""

import numpy as np
import pytest
import torch

import qtrain
from qtrain.mapping import MappingModel, ProbabilityTransform, bit_features


def test_bit_features_are_msb_first_plus_minus_one():
    f = bit_features(3, 8)
    assert f.shape == (8, 3)
    assert f[5].tolist() == [1.0, -1.0, 1.0]  # 5 = 0b101
    assert f[0].tolist() == [-1.0, -1.0, -1.0]


def test_transform_matches_the_papers_formula_by_hand():
    n, m = 3, 6
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0], dtype=torch.float64)
    x = ProbabilityTransform(n, m, dtype=torch.float64)(p).numpy()
    s = 2 ** (n - 1)
    raw = (0.8 * np.tanh(0.1 * s * p.numpy()[:m])) ** 0.3
    np.testing.assert_allclose(x, raw - raw.mean(), atol=1e-12)


def test_transform_gradient_is_finite_at_zero_probability():
    p = torch.tensor([0.0, 0.5, 0.5, 0.0], requires_grad=True)
    ProbabilityTransform(2, 4)(p).pow(2).sum().backward()
    assert torch.isfinite(p.grad).all()


def test_learnable_transform_adds_three_trainable_scalars():
    fixed = ProbabilityTransform(3, 8)
    learn = ProbabilityTransform(3, 8, learnable=True)
    assert sum(p.numel() for p in fixed.parameters()) == 0
    assert sum(p.numel() for p in learn.parameters()) == 3
    torch.testing.assert_close(learn.log_params.exp(), torch.tensor([0.1, 0.8, 0.3]))


def test_paper_mapping_is_an_affine_map():
    g = MappingModel(5, (4, 20, 4), activation="none", center=False, dtype=torch.float64)
    a, b = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    t = 0.3
    torch.testing.assert_close(g(t * a + (1 - t) * b), t * g(a) + (1 - t) * g(b))


def test_mlp_mapping_is_not_affine():
    g = MappingModel(5, (32, 32), activation="gelu", dtype=torch.float64)
    a, b = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    assert (g(0.5 * a + 0.5 * b) - 0.5 * (g(a) + g(b))).abs().max() > 1e-6


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gelu"):
        MappingModel(3, (4,), activation="swish")


@pytest.mark.parametrize("mapping", ["paper", "mlp"])
def test_whole_generator_gradient_matches_finite_differences(mapping):
    net = torch.nn.Linear(5, 3)  # M = 18, N = 5
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=2, mapping=mapping, dtype="float64", learnable_transform=True))
    proj = torch.randn(18, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    params = [p for p in qt.generator.parameters() if p.requires_grad]

    def f(*values):
        state = dict(zip([n for n, p in qt.generator.named_parameters() if p.requires_grad], values))
        return torch.func.functional_call(qt.generator, state, ()) @ proj

    inputs = tuple(p.detach().clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(f, inputs, atol=1e-6)


@pytest.mark.parametrize("activation", ["gelu", "none"])
def test_chunked_generation_equals_one_pass_in_values_and_gradients(activation):
    net = torch.nn.Sequential(torch.nn.Linear(20, 14), torch.nn.Linear(14, 5))  # M = 369, N = 9
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=2, activation=activation, dtype="float64", seed=3))
    gen = qt.generator
    params = [p for p in gen.parameters() if p.requires_grad]
    w_one = gen()
    g_one = torch.autograd.grad(w_one.pow(3).sum(), params)
    gen.chunk_rows = 100  # 4 chunks, the last one partial
    w_chunk = gen()
    g_chunk = torch.autograd.grad(w_chunk.pow(3).sum(), params)
    _assert_same_generation(gen, w_chunk, g_chunk, w_one, g_one)


def _assert_same_generation(gen, got, g_got, want, g_want):
    """Values (also under no_grad) to 1e-12 and gradients to 1e-10, float64."""
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(gen(), want.detach(), rtol=0, atol=1e-12)


def test_chunked_generation_keeps_no_bit_table_and_recomputes_activations():
    from qtrain.generator import WeightGenerator

    m, n = 5000, 13
    mapping = MappingModel(n + 1, (32, 32), activation="gelu")
    probs = torch.nn.Parameter(torch.full((2**n,), 2.0**-n))

    class Source(torch.nn.Module):
        def forward(self):
            return probs

    gen = WeightGenerator(Source(), ProbabilityTransform(n, m), mapping, n_qubits=n, sizes=[m], chunk_rows=1000)
    assert gen.bits is None
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        w = gen()
    # one pass keeps ~(N + 1 + 3 * 65) floats per row; chunked keeps O(1) per row plus one chunk
    assert sum(saved) < 20 * m, sum(saved)
    w.sum().backward()
    assert probs.grad is not None and torch.isfinite(probs.grad).all()


def test_paper_mapping_collapses_to_one_affine_map_in_chunks():
    net = torch.nn.Sequential(torch.nn.Linear(20, 14), torch.nn.Linear(14, 5))
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, mapping="paper", dtype="float64", seed=1))
    gen = qt.generator
    assert gen.mapping.as_affine() is not None
    params = [p for p in gen.parameters() if p.requires_grad]
    w_one = gen()
    g_one = torch.autograd.grad((w_one * torch.linspace(-1, 1, w_one.numel(), dtype=w_one.dtype)).sum(), params)
    gen.chunk_rows = 64
    w_chunk = gen()
    g_chunk = torch.autograd.grad((w_chunk * torch.linspace(-1, 1, w_one.numel(), dtype=w_one.dtype)).sum(), params)
    torch.testing.assert_close(w_chunk, w_one, rtol=0, atol=1e-12)
    with torch.no_grad():  # both collapse the chain: check the one pass against the layers themselves
        x = gen.transform(gen.source())
        rows = torch.cat([bit_features(qt.n_qubits, gen.n_rows, dtype=torch.float64), x[:, None]], 1)
        torch.testing.assert_close(w_one.detach(), gen.mapping.finish(gen.mapping.net(rows).reshape(-1)), rtol=0,
                                   atol=1e-12)
    for a, b in zip(g_chunk, g_one):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _generator(n, m, mapping, chunk_rows):
    from qtrain.generator import WeightGenerator

    probs = torch.nn.Parameter(torch.softmax(torch.randn(2**n, dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(5)), 0))

    class Source(torch.nn.Module):
        def forward(self):
            return probs

    rows = -(-m // mapping.n_outputs)
    kw = {} if chunk_rows is None else {"chunk_rows": chunk_rows}
    return WeightGenerator(Source(), ProbabilityTransform(n, rows, dtype=torch.float64), mapping, n_qubits=n,
                           sizes=[m], **kw), probs


@pytest.fixture
def mlp_rows_calls(monkeypatch):
    """Counts the generator's uses of the hand-written chunked MLP (``_MLPRows``) and of
    the compiled one (``_MLPKernelRows``)."""
    from qtrain import generator

    calls = []
    for fn in (generator._MLPRows, generator._MLPKernelRows):
        monkeypatch.setattr(fn, "apply", lambda *a, _apply=fn.apply: calls.append(1) or _apply(*a))
    return calls


@pytest.mark.parametrize("chunk_rows", [None, 32])  # None: one pass (autograd); 32: 2^5-row chunks, the last partial
@pytest.mark.parametrize("outputs,output_bias", [(1, True), (1, False), (3, False)])
@pytest.mark.parametrize("activation", ["gelu", "relu", "silu", "tanh", "gelu-tanh"])
def test_hand_written_mlp_backward_equals_autograd_over_the_concatenated_rows(activation, outputs, output_bias,
                                                                              chunk_rows, mlp_rows_calls, monkeypatch):
    monkeypatch.setenv("QTRAIN_KERNEL", "0")  # the PyTorch path (the compiled one: tests/test_mlp_kernel.py)
    n, m = 9, 300 if outputs == 1 else 290  # R = 300 / 97 rows of 2^9
    mapping = MappingModel(n + 1, (6, 5), n_outputs=outputs, activation=activation.split("-")[0], center=True,
                           output_bias=output_bias, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if activation == "gelu-tanh":
        mapping.net[1].approximate = mapping.net[3].approximate = "tanh"
    gen, probs = _generator(n, m, mapping, chunk_rows)
    probe = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wrt = [probs, *mapping.parameters()]
    got = gen()
    assert len(mlp_rows_calls) == (chunk_rows is not None)
    g_got = torch.autograd.grad(got @ probe, wrt)
    x = gen.transform(probs)  # the reference: autograd through the layers over the explicit [bits, x] rows
    rows = torch.cat([bit_features(n, gen.n_rows, dtype=torch.float64), x[:, None]], 1)
    want = mapping.finish(mapping.rows(rows).reshape(-1)[:m])
    g_want = torch.autograd.grad(want @ probe, wrt)
    _assert_same_generation(gen, got, g_got, want, g_want)


def test_hand_written_mlp_is_used_only_for_plain_sequential_mappings():
    from qtrain.generator import _MLPSpec

    kw = {"n_qubits": 3, "n_rows": 8, "low": 2}
    assert _MLPSpec.of(MappingModel(4, (5,), activation="gelu").net, **kw) is not None
    odd = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 1))
    assert _MLPSpec.of(odd, **kw) is None
    assert _MLPSpec.of(torch.nn.Sequential(), **kw) is None


@pytest.mark.parametrize("activation", ["gelu", "none"])  # none: the collapsed affine map
@pytest.mark.parametrize("chunk_rows", [None, 4])  # one pass; two chunks of 4 rows
@pytest.mark.parametrize("hook", ["forward", "backward", "global", "subclass"])
def test_mappings_with_hooks_or_linear_subclasses_run_as_they_are(hook, chunk_rows, activation, mlp_rows_calls):
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    mapping = MappingModel(4, (5,), activation=activation, center=False, dtype=torch.float64)
    seen = []
    if hook == "forward":  # a hook that changes the output must change the weights
        mapping.net[0].register_forward_hook(lambda mod, args, out: seen.append(1) or 2 * out)
    elif hook == "backward":
        mapping.net[0].register_full_backward_hook(lambda *a: seen.append(1))
    elif hook == "subclass":
        last = mapping.net[-1]
        mapping.net[-1] = Scaled(last.in_features, last.out_features, dtype=torch.float64)
        mapping.net[-1].load_state_dict(last.state_dict())
    gen, probs = _generator(3, 8, mapping, chunk_rows)
    x = gen.transform(probs)
    rows = torch.cat([bit_features(3, 8, dtype=torch.float64), x[:, None]], 1)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: seen.append(1)) if hook == "global" else None
    try:
        want = mapping.rows(rows.detach()).reshape(-1)
        seen.clear()
        got = gen()
        got.sum().backward()
    finally:
        if handle is not None:
            handle.remove()
    torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=1e-12)
    assert seen or hook == "subclass"
    assert not mlp_rows_calls


def test_second_derivatives_through_the_chunked_mapping_are_refused():
    mapping = MappingModel(4, (5,), activation="gelu", dtype=torch.float64)
    gen, probs = _generator(3, 8, mapping, 4)
    with pytest.raises(RuntimeError, match="second derivatives through the chunked mapping"):
        torch.autograd.grad(gen().pow(2).sum(), probs, create_graph=True)
