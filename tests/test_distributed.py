"""Data-parallel training with 2 CPU processes (torchrun, gloo): the same run as one process
with the same global batch, exact resume, rank 0 alone writing, clear errors."""

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddp_worker
import qtrain
from qtrain import cli, distributed

WORKER = Path(ddp_worker.__file__)


def _env() -> dict:
    # the workers import the qtrain this test imported, whatever the installed one is
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(qtrain.__file__).parents[1]), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _worker(out: Path, epochs: int, resume: bool = False) -> tuple[dict, list[dict]]:
    out.mkdir(exist_ok=True)
    rc = distributed.launch([str(WORKER), str(out), str(epochs), *(["--resume"] if resume else [])], 2, env=_env())
    assert rc == 0
    return load_file(str(out / "weights.safetensors")), json.loads((out / "history.json").read_text())


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """The uninterrupted 2-process run, 2 epochs (shared by the tests below)."""
    return _worker(tmp_path_factory.mktemp("ddp") / "full", 2)


def test_two_processes_equal_one_process_with_the_same_global_batch(two_procs):
    weights, history = two_procs
    qt = ddp_worker.model()
    single = ddp_worker.train(qt, 2)
    with torch.no_grad():
        ref = qt.generate_weights()
    assert weights.keys() == ref.keys()
    for k in ref:
        assert weights[k].dtype == torch.float64
        torch.testing.assert_close(weights[k], ref[k], atol=1e-5, rtol=0)
    assert max(float((weights[k] - ref[k]).abs().max()) for k in ref) < 1e-10  # only summation order differs
    # the epoch metrics are the global ones (sharded evaluation, all-reduced)
    for a, b in zip(history, single):
        assert a["epoch"] == b["epoch"] and a["lr"] == b["lr"]
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(two_procs, tmp_path):
    part = tmp_path / "part"
    _worker(part, 1)  # stopped after epoch 1
    after_one = tmp_path / "epoch1.safetensors"
    shutil.copy(part / "checkpoint.safetensors", after_one)
    resumed, history = _worker(part, 2, resume=True)
    weights, full_history = two_procs
    assert resumed.keys() == weights.keys() and all(torch.equal(resumed[k], weights[k]) for k in weights)
    assert _without_seconds(history) == _without_seconds(full_history)

    # the checkpoint does not depend on the number of processes: one process continues it
    qt = ddp_worker.model()
    ddp_worker.train(qt, 2, checkpoint=after_one, resume=True)
    with torch.no_grad():
        for k, v in qt.generate_weights().items():
            torch.testing.assert_close(v, weights[k], atol=1e-10, rtol=0)


def test_cli_nproc_2_writes_each_file_once_and_resumes(tmp_path, capfd, monkeypatch):
    args = ["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--batch-size", "25",
            "--no-progress", "--no-classical"]
    out, ref = tmp_path / "ddp", tmp_path / "single"
    for k in ("PYTHONPATH", "OMP_NUM_THREADS"):
        monkeypatch.setenv(k, _env()[k])
    assert cli.main([*args, "--epochs", "1", "--nproc", "2", "--out", str(out)]) == 0
    assert cli.main([*args, "--epochs", "2", "--nproc", "2", "--out", str(out)]) == 2  # no silent overwrite
    assert "--resume" in capfd.readouterr().err
    assert cli.main([*args, "--epochs", "2", "--nproc", "2", "--out", str(out), "--resume"]) == 0
    printed = capfd.readouterr()  # the workers' own stdout and stderr
    assert printed.out.count("iris-mlp on iris") == 1 and printed.err.count("epoch 2/2") == 1  # rank 0 alone prints
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["run"], m["epoch"]) for m in lines] == [("qt", 1), ("qt", 2)]
    for name in ("config.json", "results.json", "model.safetensors", "qt/qt_config.json", "curves.png"):
        assert (out / name).is_file(), name
    # the same global batch in one process: the same model up to float32 summation order
    assert cli.main([*args, "--epochs", "2", "--out", str(ref)]) == 0
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)


def test_every_rank_refuses_a_directory_another_process_is_training(tmp_path, capfd, monkeypatch):
    from test_reproduce import _hold_lock

    out = tmp_path / "busy"
    holder = _hold_lock(out / ".lock")
    for k in ("PYTHONPATH", "OMP_NUM_THREADS"):
        monkeypatch.setenv(k, _env()[k])
    try:
        rc = cli.main(["train", "--dataset", "iris", "--model", "iris-mlp", "--depth", "1", "--epochs", "1",
                       "--no-progress", "--no-classical", "--nproc", "2", "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert rc != 0  # rank 0's refusal is every rank's: none waits at a barrier for the others
    err = capfd.readouterr().err
    assert err.count("being trained by another process") == 2
    assert not (out / "config.json").exists()


def test_bad_process_counts_and_backends_are_one_line_errors(capsys, monkeypatch):
    assert cli.main(["train", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["train", "--nproc", "2", "--backend", "nccl"]) == 2
        assert "nccl backend needs CUDA" in capsys.readouterr().err
    assert cli.main(["train", "--nproc", "2", "--backend", "nccl", "--device", "cpu"]) == 2
    assert "nccl" in capsys.readouterr().err
    with pytest.raises(ValueError, match=">= 1"):
        distributed.launch(["x.py"], 0)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="already one of torchrun's 2 workers"):
        distributed.launch(["x.py"], 2)
    assert cli.main(["train", "--nproc", "2"]) == 2  # a worker asked to launch more
    assert "drop --nproc" in capsys.readouterr().err
    assert cli.main(["info"]) == 2  # only `train` is data-parallel
    assert "only `qtrain train`" in capsys.readouterr().err


def test_workers_get_the_same_command_line_without_nproc():
    parser = cli.build_parser()
    argv = ["train", "--dataset", "iris", "--lr", "0.000123", "--no-classical", "--nproc", "2", "--dev", "cpu",
            "--seed", "5", "--backend", "gloo"]
    args = parser.parse_args(argv)
    worker = cli._worker_argv(args)
    assert "--nproc" not in worker and "--dev" not in worker
    again = vars(parser.parse_args(worker))
    for k, v in vars(args).items():
        if k not in ("nproc", "subparser", "func"):
            assert again[k] == v, k
    # torchrun takes options it recognises anywhere on its command line: none of ours may look like one
    from torch.distributed.run import get_args_parser

    theirs = [o for o in get_args_parser()._option_string_actions if o.startswith("--")]
    ours = [a for a in worker if a.startswith("--")]
    assert not [(o, t) for o in ours for t in theirs if t.startswith(o)]
    assert isinstance(args.subparser, argparse.ArgumentParser)
