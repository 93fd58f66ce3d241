"""pipeline/lock.py: one experiment, one writer at a time (folds side by side with the same
settings); stale locks taken over; a stage dies with the make that started it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, make, make_config

from pipeline import lock
from pipeline.errors import PipelineError


def holder(stage="train", fold=0, digest="train-a", **kw):
    return {"pid": 1, "host": socket.gethostname(), "stage": stage, "fold": fold, "digest": digest, **kw}


def test_conflicts():
    me = holder()
    assert lock.conflict(me, holder(fold=1)) is None  # make -j 2 train: two folds, same settings
    assert "fold 0" in lock.conflict(me, holder())
    assert "other settings" in lock.conflict(me, holder(fold=1, digest="train-b"))
    assert lock.conflict(me, holder(fold=None)) == "is running train"  # every fold in one process
    assert lock.conflict(holder("infer", None), me) == "is running train"  # infer reads the checkpoints
    assert lock.conflict(holder("mine", None), holder("pseudo", None)) is None  # both only read infer's output
    assert lock.conflict(holder("lr_find", None), me) is None


def test_live_holder_refuses_and_stale_one_is_taken_over(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        locks = tmp_path / "locks"
        locks.mkdir()
        live = holder(pid=sleeper.pid, since="then")
        (locks / f"{socket.gethostname()}-{sleeper.pid}.json").write_text(json.dumps(live))
        with pytest.raises(PipelineError, match=rf"locked: pid {sleeper.pid} on .* is running train fold 0"):
            lock.acquire(tmp_path, "train", 0, "train-a")
        assert not lock.holder_path(tmp_path).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with lock.held(tmp_path, "train", 0, "train-a") as mine:  # the pid is gone now: a stale lock
        assert "stale lock" in capsys.readouterr().out
        assert json.loads(mine.read_text())["pid"] == os.getpid()
        assert [p.name for p in locks.glob("*.json")] == [mine.name]
    assert not mine.exists()  # released on the way out


def test_second_run_with_a_set_override_is_refused_while_the_first_trains(tmp_path, comp):
    """Two trainings of one experiment, the second with SET: refused with one line, exit 2, and
    nothing written; SIGTERM ends the first cleanly (its lock removed)."""
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 30, "lr": 1e-3}], "batch_size": 8})
    make("folds", f"CONFIG={config}")
    run = tmp_path / "runs" / "tiny"
    first = subprocess.Popen([sys.executable, "-m", "pipeline", "train", str(config), "--fold", "0"], cwd=ROOT)
    try:
        while not (run / "fold0" / "last.pt").exists() and first.poll() is None:
            time.sleep(0.05)
        stamps = sorted(p.name for p in (run / "stamps").iterdir())
        second = subprocess.run(
            [sys.executable, "-m", "pipeline", "train", str(config), "train.seed=7", "--fold", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
        assert f"locked: pid {first.pid}" in second.stderr and "other settings" in second.stderr
        assert sorted(p.name for p in (run / "stamps").iterdir()) == stamps and not (run / "fold1").exists()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 128 + signal.SIGTERM
    finally:
        first.kill()
    assert not list((run / "locks").glob("*.json"))


def test_killing_make_ends_its_stage_and_the_next_make_resumes(tmp_path, comp):
    """kill -9 of make itself: the training it started dies with it (no orphan racing the next
    run), and a plain make train resumes the fold."""
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 30, "lr": 1e-3}], "batch_size": 8})
    make("folds", f"CONFIG={config}")
    run = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", f"PY={sys.executable}", "train", f"CONFIG={config}", "FOLD=0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not (run / "fold0" / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    (held,) = (run / "locks").glob("*.json")
    child = json.loads(held.read_text())["pid"]
    proc.kill()  # make alone, not its process group
    proc.wait()
    for _ in range(200):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the training process outlived make")
    done = torch.load(run / "fold0" / "last.pt", weights_only=True)["epoch"]
    out = make("train", f"CONFIG={config}", "FOLD=0").stdout
    assert f"resuming after epoch {done}" in out and (run / "fold0" / "oof.csv").is_file()


def test_a_forked_child_dies_of_sigterm_as_before(tmp_path):
    """DataLoader workers inherit the stage's handler; SIGTERM from their loader must still end
    them by the signal (torch reads an exit code as a worker crash), not by SystemExit."""
    code = (
        "import os, signal, sys, time\n"
        "from pipeline import lock\n"
        "lock.die_with_parent()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(30); os._exit(0)\n"
        "time.sleep(0.5); os.kill(pid, signal.SIGTERM)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.WIFSIGNALED(status), os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", str(int(signal.SIGTERM))]


def test_a_fold_started_after_the_budgets_decision_joins_the_run_under_make_j(tmp_path, comp):
    """Under make -j, fold 0 took the lock before runtime.budget decided; fold 1 starts after it,
    with the decided epochs as its effective config: the same run, not one with other settings."""
    from pipeline.config_files import load_config
    from pipeline.stamps import stamp_path

    phases = [{"epochs": 40, "lr": 1e-3}]
    config = make_config(tmp_path, comp, train={"phases": phases, "batch_size": 8}, runtime={"budget": 5})
    make("folds", f"CONFIG={config}")
    written = load_config(config)
    decision = {"budget_min": 5, "img_per_s": 100.0, "epoch_seconds": [1.0], "configured_epochs": [40], "epochs": [1]}
    (written.run_dir / "budget.json").write_text(json.dumps(decision))
    assert load_config(config).train.epochs == 1  # the effective config: the decided epochs
    with lock.held(written.run_dir, "train", 0, stamp_path(written, "train").stem):  # fold 0, still training
        res = subprocess.run(
            [sys.executable, "-m", "pipeline", "train", str(config), "--fold", "1"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    assert res.returncode == 0, res.stderr
    history = (written.run_dir / "fold1" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # a header and the one decided epoch
