"""Checkpoints: a SIGKILLed run resumed with --resume ends with exactly the weights of an
uninterrupted run; corrupt, foreign and mismatched checkpoints are refused clearly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import qtrain
from qtrain import cli
from qtrain.checkpoint import CheckpointError, read_checkpoint_meta
from qtrain.train import TrainConfig

ARGS = ["train", "--dataset", "digits", "--model", "digits-cnn", "--depth", "2", "--ansatz", "ry-cnot-ring",
        "--epochs", "6", "--batch-size", "32", "--no-progress"]


def _run(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "qtrain.cli", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _epoch(path):
    try:
        return read_checkpoint_meta(path)["epoch"]
    except (CheckpointError, FileNotFoundError):
        return 0


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = _run(killed)
    ckpt = killed / "checkpoint-qt.safetensors"
    deadline = time.time() + 120
    while _epoch(ckpt) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.15)  # land somewhere inside the next epoch
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (killed / "results.json").exists()
    reached = _epoch(ckpt)
    assert 2 <= reached < 6

    resumed = _run(killed, "--resume")
    uninterrupted = _run(full)
    assert resumed.wait() == 0, resumed.stderr.read()
    assert uninterrupted.wait() == 0, uninterrupted.stderr.read()
    for name in ("model.safetensors", "classical.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(killed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    metrics = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [(m["run"], m["epoch"]) for m in metrics] == [("qt", e) for e in range(1, 7)] + [
        ("classical", e) for e in range(1, 7)]
    ref = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_loss"] for m in metrics] == [m["test_loss"] for m in ref]


def test_resume_extends_a_finished_run_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--batch-size", "32",
             "--no-progress", "--no-classical", "--out", str(out)]
    assert cli.main([*small, "--epochs", "2"]) == 0
    assert cli.main([*small, "--epochs", "2"]) == 2  # no silent overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*small, "--epochs", "3", "--resume"]) == 0
    assert _epoch(out / "checkpoint-qt.safetensors") == 3
    assert cli.main([*small, "--epochs", "3", "--resume", "--lr", "0.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert cli.main(["train", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--epochs", "1",
             "--no-progress", "--no-classical", "--out", str(out)]
    assert cli.main(small) == 0
    ckpt = out / "checkpoint-qt.safetensors"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    assert cli.main([*small, "--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(ckpt), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a qtrain training checkpoint"):
        read_checkpoint_meta(ckpt)
    assert cli.main([*small, "--resume"]) == 2


def test_runs_written_before_new_config_fields_still_resume(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--batch-size", "32",
             "--no-progress", "--no-classical", "--out", str(out)]
    assert cli.main([*small, "--epochs", "1"]) == 0
    saved = json.loads((out / "config.json").read_text())
    for field in ("shots", "diff_method", "readout_error", "generator"):  # as an older qtrain wrote it
        del saved["job"]["qt"][field]
    del saved["job"]["width"]
    (out / "config.json").write_text(json.dumps(saved))
    assert cli.main([*small, "--epochs", "2", "--resume"]) == 0
    assert _epoch(out / "checkpoint-qt.safetensors") == 2


def test_an_extension_cut_short_is_not_taken_for_finished(tmp_path):
    from qtrain.experiment import run_job

    out = tmp_path / "run"
    kw = dict(dataset="iris", model="iris-mlp", qt=qtrain.QTConfig(depth=1), runs=("qt",), progress=False,
              resume=True, skip_finished=True)
    first = run_job(out, train=TrainConfig(epochs=1, batch_size=32), **kw)
    assert first["qt"]["epochs"] == 1
    # an extension to 2 epochs rewrites config.json when it starts; killed before it ends,
    # results.json still holds the 1-epoch run
    saved = json.loads((out / "config.json").read_text())
    saved["job"]["train"]["epochs"] = 2
    (out / "config.json").write_text(json.dumps(saved))
    again = run_job(out, train=TrainConfig(epochs=2, batch_size=32), **kw)
    assert again["qt"]["epochs"] == 2 and _epoch(out / "checkpoint-qt.safetensors") == 2
