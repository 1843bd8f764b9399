"""The compiled mapping-MLP kernel (``native/_mlp.c``) inside the generator: against
autograd over the explicit ``[bits, x]`` rows (float64 values 1e-12, gradients 1e-10),
finite differences, float32 vs float64, thread-count independence, higher derivatives,
where it applies and the fallback when it is off."""

from __future__ import annotations

import copy

import pytest
import torch

import qtrain
from qtrain import generator, native
from qtrain.generator import WeightGenerator, _MLPKernel
from qtrain.mapping import MappingModel, MPSMapping, ProbabilityTransform, bit_features

pytestmark = pytest.mark.skipif(not native.available(torch.float64, "mlp"),
                                reason="needs a C compiler (gcc); .ci/run installs one")


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    apply = generator._MLPKernelRows.apply
    monkeypatch.setattr(generator._MLPKernelRows, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


def _generator(n, m, mapping, chunk_rows=None, seed=5):
    dtype = next(mapping.parameters()).dtype
    probs = torch.nn.Parameter(torch.softmax(torch.randn(2**n, dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(seed)), 0).to(dtype))

    class Source(torch.nn.Module):
        def forward(self):
            return probs

    rows = -(-m // mapping.n_outputs)
    kw = {} if chunk_rows is None else {"chunk_rows": chunk_rows}
    return WeightGenerator(Source(), ProbabilityTransform(n, rows, dtype=dtype), mapping, n_qubits=n, sizes=[m],
                           **kw), probs


def _reference(gen, probs, m):
    """Autograd through the layers over the explicit rows."""
    n, dtype = gen.n_qubits, probs.dtype
    rows = torch.cat([bit_features(n, gen.n_rows, dtype=dtype), gen.transform(probs)[:, None]], 1)
    return gen.mapping.finish(gen.mapping.rows(rows).reshape(-1)[:m])


def _mapping(n, hidden, activation, outputs=1, output_bias=True, dtype=torch.float64, seed=2):
    return MappingModel(n + 1, hidden, n_outputs=outputs, activation=activation, center=True,
                        output_bias=output_bias, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# rows: 300 (two tiles of 128 in float32 / five of 64 in float64, the last partial), 2^9 (every basis state),
# 97 x 3 outputs, 6,690 (the paper CNN)
@pytest.mark.parametrize("chunk_rows", [None, 64])
@pytest.mark.parametrize(("n", "m", "hidden", "outputs", "output_bias"), [
    (9, 300, (6, 5), 1, True), (9, 512, (5,), 1, False), (9, 290, (7, 3, 9), 3, False), (13, 6690, (32, 32), 1, True)])
@pytest.mark.parametrize("activation", ["gelu", "relu", "silu", "tanh"])
def test_kernel_equals_autograd_over_the_explicit_rows(activation, n, m, hidden, outputs, output_bias, chunk_rows,
                                                       kernel_calls):
    gen, probs = _generator(n, m, _mapping(n, hidden, activation, outputs, output_bias), chunk_rows)
    probe = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wrt = [probs, *gen.mapping.parameters()]
    got = gen()
    assert len(kernel_calls) == 1
    g_got = torch.autograd.grad(got @ probe, wrt)
    want = _reference(gen, probs, m)
    g_want = torch.autograd.grad(want @ probe, wrt)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(gen(), want.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
def test_kernel_gradient_matches_finite_differences(activation, kernel_calls):
    n, m = 7, 100
    gen, probs = _generator(n, m, _mapping(n, (5, 4), activation, outputs=2))
    names = ["probs", *[k for k, _ in gen.mapping.named_parameters()]]
    probe = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    inputs = [probs.detach().clone().requires_grad_(), *(p.detach().clone().requires_grad_()
                                                         for p in gen.mapping.parameters())]

    def g(*values):  # x = T(p) differentiable through p as an input of the source
        gen.source.forward = lambda: values[0]
        return torch.func.functional_call(gen, {f"mapping.{k}": v for k, v in zip(names[1:], values[1:])}, ()) @ probe

    assert torch.autograd.gradcheck(g, tuple(inputs), atol=1e-7)
    assert kernel_calls


def test_float32_kernel_stays_within_1e_6_of_float64(kernel_calls):
    n, m = 13, 6690
    g64, _ = _generator(n, m, _mapping(n, (32, 32), "gelu"))
    g32, _ = _generator(n, m, copy.deepcopy(g64.mapping).float())
    probe = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    w64, w32 = g64(), g32()
    assert len(kernel_calls) == 2 and w32.dtype == torch.float32
    torch.testing.assert_close(w32.double(), w64, rtol=0, atol=1e-6)
    (w64 @ probe).backward()
    (w32 @ probe.float()).backward()
    scale = max(float(p.grad.abs().max()) for p in g64.mapping.parameters())  # (the output bias's is 0 + rounding)
    for a, b in zip(g32.mapping.parameters(), g64.mapping.parameters()):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_results_do_not_depend_on_the_thread_count(dtype, kernel_calls):
    n, m = 14, 9000
    gen, probs = _generator(n, m, _mapping(n, (32, 32), "gelu", dtype=dtype))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            probs.grad = None
            gen.mapping.zero_grad()
            w = gen()
            (w * torch.linspace(-1, 1, m, dtype=dtype)).sum().backward()
            results.append([w.detach(), probs.grad, *(p.grad for p in gen.mapping.parameters())])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_second_derivatives_in_one_pass_are_exact_and_refused_in_chunks(kernel_calls):
    n, m = 5, 30
    gen, probs = _generator(n, m, _mapping(n, (4,), "gelu"))
    params = list(gen.mapping.parameters())
    (g_got,) = torch.autograd.grad(gen().pow(2).sum(), probs, create_graph=True)
    (g_want,) = torch.autograd.grad(_reference(gen, probs, m).pow(2).sum(), probs, create_graph=True)
    h_got = torch.autograd.grad(g_got.pow(2).sum(), params)
    h_want = torch.autograd.grad(g_want.pow(2).sum(), params)
    assert kernel_calls and max(float(h.abs().max()) for h in h_want) > 1e-6
    for a, b in zip(h_got, h_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
    gen.chunk_rows = 8
    with pytest.raises(RuntimeError, match="second derivatives through the chunked mapping"):
        torch.autograd.grad(gen().pow(2).sum(), probs, create_graph=True)


def test_kernel_off_gives_the_same_generation(monkeypatch, kernel_calls):
    n, m = 10, 1000
    gen, _ = _generator(n, m, _mapping(n, (8, 8), "silu"))
    on = gen().detach()
    assert len(kernel_calls) == 1
    monkeypatch.setenv("QTRAIN_KERNEL", "0")
    off = gen().detach()
    assert len(kernel_calls) == 1  # not used again
    torch.testing.assert_close(off, on, rtol=0, atol=1e-12)


def test_the_kernel_applies_only_where_it_computes_the_same_mlp():
    kw = {"n_qubits": 4, "n_rows": 16, "device": "cpu"}
    assert _MLPKernel.of(_mapping(4, (5,), "gelu"), **kw) is not None
    tanh_gelu = _mapping(4, (5,), "gelu")
    tanh_gelu.net[1].approximate = "tanh"
    mixed = _mapping(4, (5, 5), "relu")
    mixed.net[3] = torch.nn.Tanh()
    hooked = _mapping(4, (5,), "relu")
    hooked.net[0].register_forward_hook(lambda *a: None)

    class Custom(MappingModel):
        def rows(self, rows):
            return 2 * super().rows(rows)

    custom = Custom(5, (5,), activation="gelu", dtype=torch.float64)
    half = _mapping(4, (5,), "gelu", dtype=torch.bfloat16)
    for mapping in (tanh_gelu, mixed, hooked, custom, half, MPSMapping(5, bond=2, dtype=torch.float64)):
        assert _MLPKernel.of(mapping, **kw) is None


def test_the_default_qt_mapping_runs_through_the_kernel(kernel_calls):
    net = torch.nn.Sequential(torch.nn.Linear(20, 14), torch.nn.ReLU(), torch.nn.Linear(14, 5))  # M = 369, N = 9
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=2, seed=0))
    out = qt(torch.randn(4, 20))
    out.sum().backward()
    assert kernel_calls and all(p.grad is not None for p in qt.generator.mapping.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_first_layer_wider_than_a_tile(dtype, kernel_calls):
    """150 first-layer units: more than the 128 (float32) / 64 (float64) rows of a tile."""
    n, m = 8, 200
    gen, probs = _generator(n, m, _mapping(n, (150, 3), "tanh", dtype=dtype))
    wrt = [probs, *gen.mapping.parameters()]
    got = gen()
    g_got = torch.autograd.grad(got.sum(), wrt)
    want = _reference(gen, probs, m)
    g_want = torch.autograd.grad(want.sum(), wrt)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=tol)
    assert kernel_calls
