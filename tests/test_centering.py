"""Mean-centring of the mapping output: over all M (the papers') or per generated tensor."""

import json

import pytest
import torch
from torch import nn

import qtrain
from qtrain import cli


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)
        self.temperature = nn.Parameter(torch.tensor(1.5))  # a one-weight tensor

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) / self.temperature


def _tensors(qt):
    return {name: t.detach() for name, t in qt.generate_weights().items()}


def _steps(qt, n=5):
    opt = torch.optim.Adam(qt.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(qt(x), y).backward()
        opt.step()


def test_defaults_resolve_per_mapping_and_bad_values_are_refused():
    assert qtrain.QTConfig().resolved_centering == "tensor"
    assert qtrain.QTConfig(mapping="paper").resolved_centering == "global"
    assert qtrain.QTConfig(mapping="mps").resolved_centering == "tensor"
    with pytest.raises(ValueError, match="centering"):
        qtrain.QTConfig(centering="layer")


def test_tensor_centering_pins_each_tensor_mean_to_its_initial_mean_through_training():
    torch.manual_seed(0)
    net = Net()
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    qt = qtrain.QuantumTrain(net, qtrain.QTConfig(depth=1, ansatz="ry-cnot-ring", centering="tensor"))
    start = _tensors(qt)
    _steps(qt)
    after = _tensors(qt)
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert not torch.allclose(after[name], start[name])  # it trains ...
        assert abs(float(after[name].mean() - init[name].mean())) < 1e-6  # ... around the model's own mean
    assert abs(float(after["temperature"] - start["temperature"])) > 1e-4  # a single weight is not pinned


def test_global_centering_centres_over_all_weights_only():
    torch.manual_seed(0)
    cfg = dict(depth=1, ansatz="ry-cnot-ring", weight_scale="none")
    glob = qtrain.QuantumTrain(Net(), qtrain.QTConfig(**cfg, centering="global"))
    per = qtrain.QuantumTrain(Net(), qtrain.QTConfig(**cfg, centering="tensor"))
    _steps(glob)
    _steps(per)
    with torch.no_grad():
        w_glob, w_per = glob.generator(), per.generator()
    assert abs(float(w_glob.mean())) < 1e-6
    tensor_means = [float(t.mean()) for t in w_glob.split(glob.generator.sizes.tolist())]
    assert max(abs(m) for m in tensor_means) > 1e-3  # tensors drift as wholes under global centring
    for t, n in zip(w_per.split(per.generator.sizes.tolist()), per.generator.sizes.tolist()):
        if n > 1:
            assert abs(float(t.mean())) < 1e-6


def test_same_angles_and_mapping_differ_only_by_the_centring():
    torch.manual_seed(0)
    a = qtrain.QuantumTrain(Net(), qtrain.QTConfig(depth=2, weight_scale="none", centering="global"))
    b = qtrain.QuantumTrain(Net(), qtrain.QTConfig(depth=2, weight_scale="none", centering="tensor"))
    b.generator.load_state_dict(a.generator.state_dict())
    with torch.no_grad():
        wa, wb = a.generator(), b.generator()
    sizes = a.generator.sizes.tolist()
    # a tensor's share re-centred on its own is the same whatever was subtracted from all M
    pairs = [(pa, pb) for pa, pb, n in zip(wa.split(sizes), wb.split(sizes), sizes) if n > 1]
    assert len(pairs) == 4
    for pa, pb in pairs:
        assert torch.allclose(pb, pa - pa.mean(), atol=1e-6)
    # a one-weight tensor keeps the uncentred output: global centring moved it by mean(G)
    (sa,), (sb,) = wa.split(sizes)[0].tolist(), wb.split(sizes)[0].tolist()
    assert sizes[0] == 1 and abs(sa - sb) > 1e-6


def test_saved_configs_written_before_the_option_read_as_global(tmp_path):
    cfg = qtrain.QTConfig(depth=1, centering="global")
    data = cfg.to_dict()
    assert qtrain.QTConfig.from_dict(data) == cfg
    del data["centering"]  # as an older qtrain saved it
    assert qtrain.QTConfig.from_saved(data).centering == "global"
    assert qtrain.QTConfig.from_json(json.dumps(data)).centering == "global"  # it carries qtrain_version
    assert qtrain.QTConfig.from_saved(qtrain.QTConfig().to_dict()).centering == "auto"
    # a hand-written config is not a saved one: the defaults apply
    assert qtrain.QTConfig.from_dict({"depth": 4}) == qtrain.QTConfig(depth=4)
    assert qtrain.QTConfig.from_json('{"depth": 4}') == qtrain.QTConfig(depth=4)
    # a checkpoint saved before the option: loaded with global centring, as it was trained
    torch.manual_seed(0)
    qt = qtrain.QuantumTrain(Net(), cfg)
    _steps(qt)
    qt.save_pretrained(tmp_path)
    meta_path = tmp_path / "qt_config.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["centering"]
    meta_path.write_text(json.dumps(meta))
    loaded = qtrain.QuantumTrain.from_pretrained(Net(), tmp_path)
    assert loaded.config.resolved_centering == "global"
    for name, t in _tensors(qt).items():
        assert torch.equal(_tensors(loaded)[name], t)


def test_resuming_a_run_made_before_the_option_names_the_flag(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--batch-size", "32",
            "--no-progress", "--no-classical", "--out", str(out)]
    assert cli.main([*base, "--epochs", "1", "--centering", "global"]) == 0
    saved = json.loads((out / "config.json").read_text())
    del saved["job"]["qt"]["centering"]  # as written before the option existed
    (out / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert cli.main([*base, "--epochs", "2", "--resume"]) == 2  # the default (tensor) is another run
    assert "resume it with --centering global" in capsys.readouterr().err
    assert cli.main([*base, "--epochs", "2", "--resume", "--centering", "global"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
