"""pipeline/progress.py: bars on a terminal only, each stage's output kept in its log, and
TensorBoard's event files when it is installed."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pandas as pd
from helpers import ROOT, make_config

from pipeline.__main__ import main
from pipeline.progress import Board


def run_on_terminal(argv: list[str]) -> tuple[int, str]:
    """A command with stdout and stderr on a pseudo-terminal, as a person at a shell runs it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal_and_none_in_a_pipe(tmp_path, comp):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 2, "lr": 1e-3}], "batch_size": 8})
    assert main(["folds", str(config)]) == 0
    code, shown = run_on_terminal([sys.executable, "-m", "pipeline", "train", str(config), "--fold", "0"])
    assert code == 0
    assert "fold 0 epoch 1" in shown and ("img/s" in shown or "s/img" in shown)  # tqdm's rate, in images
    assert "loss=" in shown and "lr=" in shown  # live values on the training bar
    assert "validate" in shown
    argv = [sys.executable, "-m", "pipeline", "train", str(config), "--fold", "1"]
    piped = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert piped.returncode == 0 and "fold 1 epoch 1 (phase 0" in piped.stdout  # the summary line stays
    assert "batch/s" not in piped.stderr + piped.stdout and "s/batch" not in piped.stderr + piped.stdout
    assert "\r" not in piped.stderr + piped.stdout
    code, shown = run_on_terminal([sys.executable, "-m", "pipeline", "infer", str(config)])
    assert code == 0 and "predict 32 px x 2 views" in shown  # inference with TTA (hflip)


def test_each_stage_appends_its_output_and_its_error_to_a_log(tmp_path, comp, capsys):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}], "batch_size": 8})
    assert main(["folds", str(config)]) == 0
    assert main(["train", str(config), "--fold", "0"]) == 0
    log = tmp_path / "runs" / "tiny" / "logs" / "train.log"
    text = log.read_text()
    assert text.startswith("--- ") and "fold 0 epoch 0 (phase 0" in text
    assert main(["train", str(config), "train.phases.0.lr=1e9", "train.optimizer=sgd", "--fold", "1"]) == 2
    text = log.read_text()
    last = text.rstrip().splitlines()[-1]
    assert text.count("--- ") == 2 and last.startswith("error: ") and "not finite" in last
    assert last in capsys.readouterr().err


def test_each_epoch_reaches_tensorboard_as_history_csv_has_it(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _ = trained
    run = tmp / "runs" / "tiny"
    for k in (0, 1):
        history = pd.read_csv(run / f"fold{k}" / "history.csv")
        events = EventAccumulator(str(run / "tensorboard" / f"fold{k}"))
        events.Reload()
        for tag, column in [
            ("loss/train_loss", "train_loss"),
            ("loss/valid_loss", "valid_loss"),
            ("lr/lr_head", "lr_head"),
        ]:
            points = events.Scalars(tag)
            assert [p.step for p in points] == history.epoch.tolist()
            assert np.allclose([p.value for p in points], history[column], rtol=1e-6)
        assert "accuracy/valid_accuracy" in events.Tags()["scalars"]


def test_no_tensorboard_no_event_files(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def without_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("TensorBoard logging requires TensorBoard version 1.15 or above")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    board = Board(tmp_path / "tb")
    board.epoch({"epoch": 0, "train_loss": 0.5})
    board.close()
    assert not (tmp_path / "tb").exists()


def test_tensorboard_tags_group_losses_rates_sizes_and_seconds():
    tags = {k: Board.tag(k) for k in ("train_loss", "ema_valid_accuracy", "lr_head", "img_size", "data_s", "seconds")}
    assert tags == {
        "train_loss": "loss/train_loss",
        "ema_valid_accuracy": "accuracy/ema_valid_accuracy",
        "lr_head": "lr/lr_head",
        "img_size": "run/img_size",
        "data_s": "seconds/data_s",
        "seconds": "seconds/seconds",
    }
