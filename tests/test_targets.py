"""Which weights are generated: target/exclude modules, modules_to_save, and QT-LoRA."""

import pytest
import torch
from torch import nn

import qtrain


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.encoder(x))))


def _fresh(seed=0):
    torch.manual_seed(seed)
    return Net()


def test_only_targeted_modules_are_generated_and_the_rest_frozen_in_place():
    net = _fresh()
    own = {k: v.clone() for k, v in net.state_dict().items()}
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, target_modules=["encoder"], exclude_modules=["encoder.0"]))
    assert [s.name for s in qt.layout.slots] == ["encoder.2.weight", "encoder.2.bias"]
    assert qt.n_generated == 16 * 16 + 16
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.randn(4, 12)
    loss = qt(x).pow(2).sum()
    loss.backward()
    plain = qt.merge_and_unload()
    for k in ("encoder.0.weight", "norm.weight", "head.bias"):  # not targeted: the model's own values
        torch.testing.assert_close(plain.state_dict()[k], own[k])
    torch.testing.assert_close(plain(x), qt(x))


def test_regex_targets_and_unmatched_patterns_give_clear_errors():
    qt = qtrain.QuantumTrain(_fresh(), qtrain.QTConfig(depth=1, target_modules=r"encoder\.\d+|head"))
    assert {s.name.rsplit(".", 1)[0] for s in qt.layout.slots} == {"encoder.0", "encoder.2", "head"}
    with pytest.raises(ValueError, match="matches no module of Net; its modules: encoder, encoder.0"):
        qtrain.QuantumTrain(_fresh(), qtrain.QTConfig(depth=1, target_modules=["decoder"]))
    with pytest.raises(ValueError, match="target_modules"):
        qtrain.QTConfig(target_modules=["ok", 3])


def test_modules_to_save_train_classically_are_counted_and_saved(tmp_path):
    net = _fresh()
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, target_modules=["encoder"], modules_to_save=["head"]))
    counts = qt.trainable_parameter_counts()
    assert counts["classical"] == 16 * 3 + 3
    assert qt.n_trainable == counts["qnn"] + counts["mapping"] + counts["classical"]
    assert qt.layout.classical == ("head.weight", "head.bias") and not net.norm.weight.requires_grad
    opt = torch.optim.Adam([p for p in qt.parameters() if p.requires_grad], lr=1e-2)
    before = net.head.weight.detach().clone()
    x = torch.randn(8, 12)
    for _ in range(3):
        opt.zero_grad()
        qt(x).pow(2).mean().backward()
        opt.step()
    assert not torch.equal(net.head.weight, before)  # the head trained as an ordinary parameter
    qt.save_pretrained(tmp_path)
    again = qtrain.QuantumTrain.from_pretrained(_fresh(seed=5), tmp_path)
    torch.testing.assert_close(again(x), qt(x))
    assert again.trainable_parameter_counts() == counts


def test_lora_starts_at_the_pretrained_model_and_keeps_its_weights_frozen():
    net = _fresh()
    base = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 12)
    with torch.no_grad():
        reference = net(x)
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=2, lora_rank=2, target_modules=["encoder.2", "head"]))
    # A (r, in) and B (out, r) per adapted layer
    assert [(s.name, s.shape) for s in qt.layout.slots] == [
        ("encoder.2.lora_A", (2, 16)), ("encoder.2.lora_B", (16, 2)), ("head.lora_A", (2, 16)), ("head.lora_B", (3, 2))]
    assert qt.n_generated == 2 * (16 + 16) + 2 * (16 + 3)
    assert not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(qt(x), reference, rtol=0, atol=0)  # B = 0 exactly at the start
    opt = torch.optim.Adam(qt.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        qt(x).pow(2).mean().backward()
        opt.step()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, base[k], rtol=0, atol=0)
    plain = qt.merge_and_unload()
    delta = plain.encoder[2].weight - base["encoder.2.weight"]
    assert delta.abs().max() > 1e-4 and torch.linalg.matrix_rank(delta.double(), atol=1e-6) <= 2
    torch.testing.assert_close(plain(x), qt(x))
    torch.testing.assert_close(plain.encoder[0].weight, base["encoder.0.weight"])  # not adapted


def test_lora_alpha_scales_the_delta_and_round_trips(tmp_path):
    deltas = []
    for alpha in (None, 4.0):  # scale 1, then 2
        qt = qtrain.QuantumTrain(_fresh(), qtrain.QTConfig(depth=1, lora_rank=2, lora_alpha=alpha, target_modules=["head"],
                                                           dtype="float64"))
        with torch.no_grad():
            qt.qnn.weights.add_(0.3)  # move away from the start (the same move in both)
        deltas.append(qt.generate_weights()["head.weight"] - qt.model.head.weight)
    torch.testing.assert_close(deltas[1], 2 * deltas[0])
    qt.save_pretrained(tmp_path)
    again = qtrain.QuantumTrain.from_pretrained(_fresh(), tmp_path)
    torch.testing.assert_close(again.generate_weights()["head.weight"], qt.generate_weights()["head.weight"])


def test_lora_refuses_non_linear_targets_and_subspace():
    with pytest.raises(ValueError, match="LoRA adapts nn.Linear layers; `norm` is a LayerNorm"):
        qtrain.QuantumTrain(_fresh(), qtrain.QTConfig(depth=1, lora_rank=2, target_modules=["norm"]))
    with pytest.raises(ValueError, match="subspace"):
        qtrain.QTConfig(lora_rank=2, generator="subspace")
    with pytest.raises(ValueError, match="lora_rank"):
        qtrain.QTConfig(lora_alpha=8)


def test_lora_gradient_matches_finite_differences():
    qt = qtrain.QuantumTrain(_fresh(), qtrain.QTConfig(depth=1, lora_rank=1, target_modules=["head"], dtype="float64",
                                                       mapping_hidden=(3,)))
    qt.model.double()
    x = torch.randn(3, 12, dtype=torch.float64)
    names = [n for n, p in qt.named_parameters() if p.requires_grad]
    with torch.no_grad():
        qt.qnn.weights.add_(0.2)

    def f(*values):
        return torch.func.functional_call(qt, dict(zip(names, values)), (x,)).sum()

    inputs = tuple(p.detach().clone().requires_grad_() for n, p in qt.named_parameters() if p.requires_grad)
    assert torch.autograd.gradcheck(f, inputs, atol=1e-6)
