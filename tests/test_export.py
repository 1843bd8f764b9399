"""ONNX export of a trained run gives the same outputs under onnxruntime."""

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from qtrain import cli, data
from qtrain.models import DigitsCNN


def test_export_to_safetensors_and_onnx_matches_the_plain_model(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--model", "digits-cnn", "--depth", "1", "--epochs", "1",
                     "--no-progress", "--no-classical", "--out", str(run)]) == 0
    assert cli.main(["export", str(run)]) == 0
    plain = DigitsCNN().eval()
    plain.load_state_dict(load_file(str(run / "export" / "model.safetensors")))
    x = data.load_dataset("digits").x_test[:7]
    with torch.no_grad():
        expected = plain(x).numpy()
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert torch.equal(load_file(str(run / "model.safetensors"))["fc.weight"], plain.fc.weight)


def test_export_of_an_unfinished_run_uses_its_last_checkpoint(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--epochs", "1",
                     "--no-progress", "--no-classical", "--out", str(run)]) == 0
    expected = load_file(str(run / "model.safetensors"))
    (run / "model.safetensors").unlink()  # as if killed before the end
    capsys.readouterr()
    assert cli.main(["export", str(run), "--no-onnx"]) == 0
    assert "checkpoint-qt.safetensors (epoch 1)" in capsys.readouterr().out
    got = load_file(str(run / "export" / "model.safetensors"))
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert json.loads((run / "config.json").read_text())["job"]["model"] == "iris-mlp"
