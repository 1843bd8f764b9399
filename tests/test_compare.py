"""qtrain compare: every method at the budget, a table and a plot, resumable."""

import json

import pytest

from qtrain import cli
from qtrain.compare import parse_budget
from qtrain.models import build_model, count_parameters, widest_within


def test_budget_parsing_validates_fields():
    assert parse_budget("depth=16,ansatz=ry-cnot-ring") == {"depth": 16, "ansatz": "ry-cnot-ring"}
    with pytest.raises(ValueError, match="key=value"):
        parse_budget("16")
    with pytest.raises(TypeError):
        parse_budget("depht=3")


def test_small_classical_is_the_widest_family_member_within_the_budget():
    width, n = widest_within("paper-cnn", 1497)
    assert n <= 1497 and n == count_parameters(build_model("paper-cnn", width))
    assert count_parameters(build_model("paper-cnn", width + 0.01)) > 1497
    with pytest.raises(ValueError, match="narrowest"):
        widest_within("paper-cnn", 10)


def test_compare_runs_each_method_and_writes_the_table(tmp_path, capsys):
    args = ["compare", "--dataset", "iris", "--model", "iris-mlp", "--budget-from", "depth=1", "--seeds", "0",
            "--epochs", "1", "--methods", "qnn", "tensor-train", "subspace", "small-classical", "--out", str(tmp_path),
            "--no-progress"]
    assert cli.main(args) == 0
    records = json.loads((tmp_path / "results.json").read_text())
    by = {r["method"]: r for r in records}
    assert set(by) == {"qnn", "tensor-train", "subspace", "small-classical"}
    assert by["subspace"]["trainable"] == 83  # z cannot exceed M: the iris MLP has 83 weights
    assert by["small-classical"]["trainable"] <= by["qnn"]["trainable"]
    assert abs(by["tensor-train"]["trainable"] - by["qnn"]["trainable"]) < 50
    assert all(r["target"] == by["qnn"]["trainable"] for r in records)
    assert f"| depth1 ({by['qnn']['trainable']:,}) | qnn |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_vs_trainable.png").is_file()
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "->" not in capsys.readouterr().err  # finished runs are skipped


def test_a_rerun_with_other_settings_is_refused_not_reported_stale(tmp_path, capsys):
    base = ["compare", "--dataset", "iris", "--model", "iris-mlp", "--budget-from", "depth=1", "--methods", "qnn",
            "--epochs", "1", "--out", str(tmp_path), "--no-progress"]
    assert cli.main([*base, "--seeds", "0", "0"]) == 0  # a repeated seed runs and counts once
    assert json.loads((tmp_path / "results.json").read_text())[0]["seeds"] == 1
    capsys.readouterr()
    assert cli.main([*base, "--seeds", "0", "--lr", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_learning_rate_search_chooses_on_validation_and_reports_test(tmp_path):
    args = ["compare", "--dataset", "iris", "--model", "iris-mlp", "--budget-from", "depth=1", "--methods", "qnn",
            "small-classical", "--seeds", "0", "--epochs", "2", "--lrs", "1e-4", "3e-2", "--out", str(tmp_path),
            "--no-progress"]
    assert cli.main(args) == 0
    records = {r["method"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    for method, rec in records.items():
        runs = {lr: json.loads((tmp_path / "depth1" / f"{method}-lr{lr:g}-seed0" / "results.json").read_text())
                for lr in (1e-4, 3e-2)}
        key = "classical" if method == "small-classical" else "qt"
        val = {lr: r[key]["val_acc"] for lr, r in runs.items()}
        assert rec["lr"] == max(val, key=lambda k: (val[k], -k))  # best validation accuracy wins
        assert rec["test_acc_mean"] == runs[rec["lr"]][key]["test_acc"]
        config = json.loads((tmp_path / "depth1" / f"{method}-lr0.0001-seed0" / "config.json").read_text())
        assert config["data"]["n_val"] == 12 and config["data"]["n_train"] == 108
