"""QuantumTrain: generic injection over a model zoo, merge, persistence, errors."""

import json

import pytest
import torch
from torch import nn

import qtrain
from models import ZOO, BatchNormNet, FrozenNet, PaperCNN, ResidualMLP, TiedNet
from qtrain import QTConfig, QuantumTrain

SMALL = QTConfig(depth=2)


def wrap(cls, config=SMALL):
    return QuantumTrain(cls(), config)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_generated_tensor_gets_a_nonzero_gradient(name):
    cls, inputs = ZOO[name]
    qt = wrap(cls)
    with qt.cached_weights() as weights:
        for t in weights.values():
            t.retain_grad()
        out = qt(*inputs())
        out.pow(2).mean().backward()
    assert set(weights) == {a for s in qt.layout.slots for a in s.aliases}
    for slot in qt.layout.slots:
        grad = weights[slot.name].grad
        assert grad is not None and grad.abs().sum() > 0, slot.name
    assert qt.qnn.weights.grad.abs().sum() > 0
    for p in qt.generator.mapping.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_merge_and_unload_equals_the_wrapped_model_in_eval_mode(name):
    cls, inputs = ZOO[name]
    reference_names = [n for n, _ in cls().named_parameters(remove_duplicate=False)]
    qt = wrap(cls)
    x = inputs()
    qt.eval()
    with torch.no_grad():
        expected = qt(*x)
    plain = qt.merge_and_unload().eval()
    assert type(plain) is cls
    assert [n for n, _ in plain.named_parameters(remove_duplicate=False)] == reference_names
    assert all(not type(m).__module__.startswith("qtrain") for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(*x), expected, atol=1e-6, rtol=0)
    # generated_state_dict loads into a fresh instance of the user's class
    fresh = cls().eval()
    fresh.load_state_dict(qt.generated_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(*x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_save_and_load_round_trip_is_bit_identical(name, tmp_path):
    cls, inputs = ZOO[name]
    torch.manual_seed(0)
    qt = wrap(cls, QTConfig(depth=2, seed=3))
    x = inputs()
    opt = torch.optim.Adam(qt.parameters(), lr=1e-2)
    qt(*x).pow(2).mean().backward()  # train mode: BatchNorm statistics move too
    opt.step()
    qt.eval()
    with torch.no_grad():
        expected = qt(*x)
    qt.save_pretrained(tmp_path)

    torch.manual_seed(999)  # a different fresh model and a different default init
    other = QuantumTrain(cls(), QTConfig(depth=2, seed=4)).eval()
    with torch.no_grad():
        assert not torch.equal(other(*x), expected)  # loading must be what restores it
    loaded = QuantumTrain.from_pretrained(cls(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(*x), expected)
    assert loaded.config == qt.config
    meta = json.loads((tmp_path / "qt_config.json").read_text())
    assert meta["qtrain_version"] == qtrain.__version__


def test_from_pretrained_rejects_another_architecture_naming_the_differences(tmp_path):
    wrap(ResidualMLP).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing in model: inp.weight") as e:
        QuantumTrain.from_pretrained(FrozenNet(), tmp_path)
    assert "not in checkpoint: head.weight" in str(e.value)
    with pytest.raises(ValueError, match=r"shape of inp.weight: checkpoint \[6, 4\], model \[7, 4\]"):
        QuantumTrain.from_pretrained(ResidualMLP(width=7), tmp_path)


def test_from_pretrained_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="qt_config.json"):
        QuantumTrain.from_pretrained(ResidualMLP(), tmp_path)
    wrap(ResidualMLP).save_pretrained(tmp_path)
    (tmp_path / "qt_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read"):
        QuantumTrain.from_pretrained(ResidualMLP(), tmp_path)
    (tmp_path / "qt_config.json").write_text("{broken")
    with pytest.raises(ValueError, match="cannot read"):
        QuantumTrain.from_pretrained(ResidualMLP(), tmp_path)


@pytest.mark.parametrize("depth", [1, 4, 7, 10, 13, 16])
def test_paper_cnn_counts_match_the_paper(depth):
    qt = QuantumTrain(PaperCNN(), QTConfig(depth=depth, mapping="paper"))
    assert qt.n_generated == 6690
    assert qt.n_qubits == 13
    assert qt.n_trainable == 78 * depth + 249
    counts = qt.trainable_parameter_counts()
    assert counts["qnn"] == 78 * depth and counts["mapping"] == 249 and counts["transform"] == 0


def test_learnable_transform_is_counted():
    qt = QuantumTrain(PaperCNN(), QTConfig(depth=1, mapping="paper", learnable_transform=True))
    assert qt.n_trainable == 78 + 249 + 3


def test_parameters_are_exactly_the_qnn_and_mapping():
    qt = wrap(ResidualMLP)
    assert [n for n, _ in qt.named_parameters()] == [f"generator.{n}" for n, _ in qt.generator.named_parameters()]
    assert "model.inp.weight" in qt.state_dict()  # placeholders still saved and moved
    qt.requires_grad_(True)
    assert not qt.model.inp.weight.requires_grad  # and never unfrozen by accident


def test_only_qnn_and_mapping_parameters_are_trainable():
    qt = wrap(FrozenNet)
    trainable = [n for n, p in qt.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("generator.") for n in trainable)
    assert qt.n_trainable == sum(p.numel() for n, p in qt.named_parameters() if p.requires_grad)


def test_batchnorm_statistics_stay_classical_and_keep_updating():
    qt = wrap(BatchNormNet)
    assert "bn.running_mean" not in {a for s in qt.layout.slots for a in s.aliases}
    assert {"bn.weight", "bn.bias"} <= {s.name for s in qt.layout.slots}
    before = qt.model.bn.running_mean.clone()
    qt.train()
    qt(torch.randn(8, 6) + 3)
    assert not torch.equal(qt.model.bn.running_mean, before)
    assert int(qt.model.bn.num_batches_tracked) == 1
    running = qt.model.bn.running_mean.clone()
    qt.eval()
    qt(torch.randn(8, 6))
    assert torch.equal(qt.model.bn.running_mean, running)


def test_tied_parameters_are_generated_once():
    qt = wrap(TiedNet)
    assert qt.n_generated == 9 * 4 + 4 * 4 + 4  # the decoder reuses the embedding
    slot = next(s for s in qt.layout.slots if s.name == "emb.weight")
    assert slot.aliases == ("emb.weight", "dec.weight")
    plain = qt.merge_and_unload()
    assert plain.dec.weight is plain.emb.weight


def test_frozen_parameters_are_not_generated_and_left_as_they_are():
    torch.manual_seed(0)
    net = FrozenNet()
    frozen = net.backbone.weight.detach().clone()
    qt = QuantumTrain(net, SMALL)
    assert qt.n_generated == 6 * 2 + 2
    assert set(qt.layout.frozen) == {"backbone.weight", "backbone.bias"}
    opt = torch.optim.Adam(qt.parameters(), lr=0.1)
    for _ in range(3):
        qt(torch.randn(4, 5)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(qt.model.backbone.weight, frozen)
    plain = qt.merge_and_unload()
    assert torch.equal(plain.backbone.weight, frozen) and not plain.backbone.weight.requires_grad


def test_merge_keeps_parameter_order_when_only_part_of_a_module_is_generated():
    net = nn.Linear(3, 2)
    net.weight.requires_grad_(True)
    net.bias.requires_grad_(False)
    qt = QuantumTrain(net, SMALL)
    assert [n for n, _ in qt.merge_and_unload().named_parameters()] == ["weight", "bias"]


def test_one_circuit_evaluation_per_forward_and_one_per_cached_pass():
    qt = wrap(ResidualMLP)
    calls = []
    qt.qnn.register_forward_hook(lambda *a: calls.append(1))
    qt(torch.randn(16, 4))
    assert len(calls) == 1
    with torch.no_grad(), qt.cached_weights():
        for _ in range(3):
            qt(torch.randn(5, 4))
        with qt.cached_weights():
            qt(torch.randn(5, 4))
    assert len(calls) == 2
    qt(torch.randn(2, 4))
    assert len(calls) == 3


def test_an_optimizer_step_trains_the_generator_and_changes_the_output():
    qt = wrap(ResidualMLP)
    x = torch.randn(8, 4)
    before = qt(x).detach()
    angles = qt.qnn.weights.detach().clone()
    opt = torch.optim.Adam(qt.parameters(), lr=1e-2)
    torch.nn.functional.cross_entropy(qt(x), torch.zeros(8, dtype=torch.long)).backward()
    opt.step()
    assert not torch.equal(qt.qnn.weights.detach(), angles)
    assert not torch.allclose(qt(x), before)


def test_float64_generator_feeds_float32_and_float64_models():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2).double())
    qt = QuantumTrain(net, QTConfig(depth=1, dtype="float64"))
    weights = qt.generate_weights()
    assert weights["0.weight"].dtype == torch.float32 and weights["1.weight"].dtype == torch.float64
    assert qt.qnn.weights.dtype == torch.float64


def test_seed_controls_initialisation():
    def state(seed):
        torch.manual_seed(0)  # the same template model each time (its init sets the gains)
        return QuantumTrain(ResidualMLP(), QTConfig(depth=2, seed=seed)).generator.state_dict()

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["source.weights"], c["source.weights"])


def test_weight_scale_init_starts_each_tensor_near_its_own_spread_and_mean():
    torch.manual_seed(0)
    net = PaperCNN()
    stds = {n: float(p.detach().std()) for n, p in net.named_parameters()}
    qt = QuantumTrain(net, QTConfig(depth=2))
    with torch.no_grad():
        weights = qt.generate_weights()
    ratio = torch.tensor([float(weights[n].std()) / stds[n] for n in stds])
    assert 0.05 < float(ratio.median()) < 20  # same order of magnitude, not 1e-3 off
    bn = QuantumTrain(BatchNormNet(), QTConfig(depth=2))
    with torch.no_grad():
        gamma = bn.generate_weights()["bn.weight"]
    assert abs(float(gamma.mean()) - 1) < 0.2  # BatchNorm scales start near 1, not near 0


def test_print_trainable_parameters(capsys):
    QuantumTrain(PaperCNN(), QTConfig(depth=16, mapping="paper")).print_trainable_parameters()
    out = capsys.readouterr().out
    for piece in ("QNN angles: 1,248", "mapping: 249", "trainable: 1,497", "generated M: 6,690", "qubits N: 13"):
        assert piece in out


class _Complex(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, dtype=torch.complex64))


class _Integer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.steps = nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)


def test_bad_models_get_clear_errors():
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        QuantumTrain("not a model")
    with pytest.raises(TypeError, match=r"parameter `w` has dtype torch.complex64"):
        QuantumTrain(_Complex())
    with pytest.raises(TypeError, match=r"parameter `steps` has dtype torch.int64"):
        QuantumTrain(_Integer())
    with pytest.raises(ValueError, match="no trainable floating-point parameter"):
        QuantumTrain(nn.ReLU())
    with pytest.raises(ValueError, match="no trainable floating-point parameter"):
        QuantumTrain(nn.Linear(2, 2).requires_grad_(False))
    with pytest.raises(TypeError, match="`config` must be a qtrain.QTConfig"):
        QuantumTrain(nn.Linear(2, 2), {"depth": 2})
    net = nn.Linear(2, 2)
    qt = QuantumTrain(net, SMALL)
    with pytest.raises(ValueError, match="already wrapped"):
        QuantumTrain(net, SMALL)
    QuantumTrain(qt.merge_and_unload(), SMALL)  # a merged copy wraps again
    with pytest.raises(TypeError, match="wrap the plain model, not a DataParallel"):
        QuantumTrain(nn.DataParallel(nn.Linear(2, 2)), SMALL)
    with pytest.raises(ValueError, match="Invalid `device` 'gpu0'"):
        QTConfig(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            QuantumTrain(nn.Linear(2, 2), QTConfig(depth=1, device="cuda"))


def test_the_wrapped_model_sees_generated_tensors_and_refuses_direct_calls():
    class SelfAware(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            # common idioms: read the device off the parameters, an L2 term over them
            device = next(self.parameters()).device
            penalty = sum(p.pow(2).sum() for p in self.parameters())
            return self.fc(x.to(device)) + 0 * penalty, penalty

    net = SelfAware()
    qt = QuantumTrain(net, SMALL)
    out, penalty = qt(torch.randn(4, 3))
    with qt.cached_weights() as weights:
        expected = sum(w.pow(2).sum() for w in weights.values())
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    assert qt.qnn.weights.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="wrapped by a QuantumTrain"):
        net(torch.randn(4, 3))
    plain = qt.merge_and_unload()
    plain(torch.randn(4, 3))  # the merged copy is free of the guard
    assert all(p.requires_grad for p in plain.parameters())


def test_the_config_is_copied_and_dtype_conversions_keep_the_generator_in_its_dtype():
    cfg = QTConfig(depth=2)
    qt = QuantumTrain(BatchNormNet(), cfg)
    cfg.depth = 5
    assert qt.config.depth == 2
    qt.double()
    assert qt.qnn.weights.dtype == torch.float32
    assert qt.model.fc.weight.dtype == torch.float64
    assert qt(torch.randn(4, 6, dtype=torch.float64)).dtype == torch.float64
    assert qt.merge_and_unload().fc.weight.dtype == torch.float64
    assert QTConfig(dtype=torch.float64).dtype == "float64"


def test_too_few_qubits_names_the_figure():
    with pytest.raises(ValueError, match=r"`n_qubits`=12 gives 4,096 amplitudes but the target has 6,690 weights; need >= 13"):
        QuantumTrain(PaperCNN(), QTConfig(n_qubits=12))
    assert QuantumTrain(PaperCNN(), QTConfig(depth=1, n_qubits=14)).n_qubits == 14


def test_a_single_weight_model_uses_one_qubit():
    net = nn.Linear(1, 1, bias=False)
    qt = QuantumTrain(net, QTConfig(depth=1))
    assert (qt.n_generated, qt.n_qubits) == (1, 1)
    assert qt(torch.ones(1, 1)).shape == (1, 1)


def test_memory_check_refuses_before_allocating(monkeypatch):
    import qtrain.resources as res

    monkeypatch.setattr(res, "available_bytes", lambda device=None: 1 * 2**20)
    with pytest.raises(MemoryError, match=r"generating 6,690 weights from a 13-qubit"):
        QuantumTrain(PaperCNN(), QTConfig(depth=16))
    assert QuantumTrain(PaperCNN(), QTConfig(depth=1, check_memory=False)).n_qubits == 13
