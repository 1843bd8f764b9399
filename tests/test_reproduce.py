"""qtrain reproduce: presets run seed by seed, rerun continues, tables hold what ran."""

import csv
import json

from qtrain import cli
from qtrain.reproduce import EXPERIMENTS


def test_presets_match_the_published_tables():
    assert EXPERIMENTS["fashion-depth"].published[16] == 78.71  # their test accuracy, not the 79.46 train figure
    assert EXPERIMENTS["mnist-depth"].depths == (1, 4, 7, 10, 13, 16)
    assert EXPERIMENTS["cifar10"].qt["mapping_hidden"] == (40, 200, 40)
    assert EXPERIMENTS["mnist-depth"].train == {"epochs": 50, "batch_size": 128, "lr": 1e-4}


def test_quick_iris_study_writes_tables_and_a_rerun_skips_finished_jobs(tmp_path, capsys):
    args = ["reproduce", "iris", "--quick", "--seeds", "0", "1", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(args) == 0
    out = tmp_path / "iris-quick"
    table = (out / "results.md").read_text()
    assert "| QT L=1 |" in table and "| QT L=2 |" in table and "classical (1 epoch, papers')" in table
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows][:2] == ["QT L=1", "QT L=2"] and rows[0]["seeds"] == "2"
    per_run = [json.loads((out / f"qt-L1-seed{s}" / "results.json").read_text())["qt"]["test_acc"] for s in (0, 1)]
    assert abs(float(rows[0]["test_acc_mean"]) - sum(per_run) / 2) < 1e-12
    secs = [json.loads((out / f"qt-L1-seed{s}" / "results.json").read_text())["qt"]["train_seconds"] for s in (0, 1)]
    header, _, first = table.splitlines()[-6:-3]
    assert header.endswith("| train time s (mean) |") and first.endswith(f"| {sum(secs) / 2:,.0f} |")
    assert (out / "summary.png").is_file() and (out / "loss_curves.png").is_file()
    capsys.readouterr()
    stamp = (out / "qt-L1-seed0" / "results.json").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert "->" not in capsys.readouterr().err  # nothing re-ran
    assert (out / "qt-L1-seed0" / "results.json").stat().st_mtime_ns == stamp


def test_quick_shots_study_tabulates_executions_and_accuracy(tmp_path, monkeypatch):
    from qtrain import reproduce

    monkeypatch.setattr(reproduce, "SHOTS_TASKS", {"iris": reproduce.SHOTS_TASKS["iris"]})
    assert cli.main(["reproduce", "shots", "--quick", "--seeds", "0", "--out", str(tmp_path), "--no-progress"]) == 0
    records = json.loads((tmp_path / "shots-quick" / "results.json").read_text())
    by = {(r["estimator"], r["shots"]): r for r in records}
    assert set(by) == {("backprop", 100), ("backprop", None), ("parameter-shift", 100), ("parameter-shift", None)}
    assert by[("parameter-shift", 100)]["executions_per_step"] == 1 + 14 * 7 * 2  # u3-cu3-ring, N = 7, L = 2
    assert by[("backprop", 100)]["executions_per_step"] == 1
    assert (tmp_path / "shots-quick" / "shots.png").is_file()


def _hold_lock(path):
    """Another process holding a job directory's lock, as a running `qtrain` would."""
    import subprocess
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_job_another_process_trains_is_refused_or_skipped_and_freed_when_it_dies(tmp_path, capsys):
    out = tmp_path / "iris-quick"
    holder = _hold_lock(out / "qt-L1-seed0" / ".lock")
    try:
        # `qtrain train` into a busy directory: one clear line, nothing written
        busy = out / "qt-L1-seed0"
        assert cli.main(["train", "--dataset", "iris", "--model", "iris-mlp", "--epochs", "1", "--out", str(busy),
                         "--no-progress"]) == 2
        assert "being trained by another process" in capsys.readouterr().err
        assert not (busy / "config.json").exists()
        # the preset skips the busy job, trains the others, tabulates what finished
        args = ["reproduce", "iris", "--quick", "--seeds", "0", "--out", str(tmp_path), "--no-progress"]
        assert cli.main(args) == 0
        assert "qt L=1 seed 0: skipped, another process is training" in capsys.readouterr().err
        assert not (busy / "results.json").exists() and (out / "qt-L2-seed0" / "results.json").is_file()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "qt L=1 seed 0 ->" in err and "qt L=2 seed 0 ->" not in err  # only the skipped job ran
    assert (busy / "results.json").is_file()
