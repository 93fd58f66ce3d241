"""pipeline/stages/lr_find.py: smoothing, the divergence stop, the suggestions, its output files."""

import numpy as np
import pandas as pd
import pytest
from helpers import make_config

from pipeline.config_files import load_config
from pipeline.stages import folds as folds_stage
from pipeline.stages import lr_find


def test_smoothing_is_bias_corrected():
    assert lr_find.smooth([2.0, 2.0, 2.0], 0.98) == pytest.approx([2.0, 2.0, 2.0])  # no pull to 0
    assert lr_find.smooth([1.0, 3.0], 0.5)[-1] == pytest.approx((0.25 + 1.5) / 0.75)


def test_divergence_rule():
    assert not lr_find.diverged(np.array([3.0, 2.0, 1.0, 3.9]), 4.0)
    assert lr_find.diverged(np.array([3.0, 2.0, 1.0, 4.1]), 4.0)
    assert lr_find.diverged(np.array([1.0, np.nan]), 4.0)


def test_suggestions_on_a_known_curve():
    lrs = lr_find.lr_schedule(1e-6, 1.0, 61)
    x = np.log10(lrs)  # loss falls fastest at 1e-3, is lowest at 1e-2, then blows up
    loss = 2 - np.tanh((x + 3) * 2) + np.where(x > -2, (x + 2) ** 2 * 20, 0)
    best = lr_find.suggest(lrs, loss)
    assert best["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert best["min/10"] == pytest.approx(1e-3, rel=0.3)


def test_range_test_stops_on_divergence(tmp_path, comp, capsys):
    path = make_config(tmp_path, comp, lr_find={"start_lr": 1e-5, "end_lr": 1e4, "num_iter": 200})
    cfg = load_config(path)
    folds_stage.main(cfg)
    best = lr_find.main(cfg)
    table = pd.read_csv(cfg.run_dir / "lr_find.csv")
    assert list(table.columns) == ["lr", "loss", "smoothed"]
    assert 5 < len(table) < 200  # stopped before end_lr: the loss blew up
    assert table.smoothed.iloc[-1] > 4 * table.smoothed.min() or not np.isfinite(table.smoothed.iloc[-1])
    assert np.all(np.diff(table.lr) > 0)
    for lr in best.values():
        assert table.lr.min() <= lr <= table.lr.max()
    assert (cfg.run_dir / "lr_find.png").stat().st_size > 1000
    assert "stopped: loss diverged" in capsys.readouterr().out


def test_later_phase_starts_from_the_earlier_phases(tmp_path, comp, capsys):
    path = make_config(
        tmp_path,
        comp,
        lr_find={"phase": 1, "num_iter": 6, "end_lr": 1e-2},
        train={"phases": [{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 1, "lr": 1e-3, "img_size": 24}]},
    )
    cfg = load_config(path)
    folds_stage.main(cfg)
    lr_find.main(cfg)
    out = capsys.readouterr().out
    assert "fold 0 epoch 0 (phase 0, 32 px, frozen)" in out and "lr_find: 6 updates" in out
    assert not (cfg.run_dir / "fold0").exists()  # the warm-up phases leave no training artifacts


def test_the_range_test_of_a_number(numbers, capsys):
    _, _, cfg, _ = numbers["ordinal"]
    cfg = cfg.model_copy(update={"lr_find": cfg.lr_find.model_copy(update={"num_iter": 12})})
    lr_find.main(cfg)
    table = pd.read_csv(cfg.run_dir / "lr_find.csv")
    assert len(table) > 5 and np.isfinite(table.loss.iloc[:5]).all()
