"""runtime.budget: the first fold's measured speed scales every phase's epochs by one factor,
the decision is kept for every fold, and a budget that cannot hold one epoch each is refused."""

import json

import pandas as pd
import pytest
from helpers import make, make_config

from pipeline.budget import scaled_epochs
from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.runs import RunDir
from pipeline.stages import folds, leaderboard, report, train
from pipeline.training import clock


def test_epochs_are_scaled_in_proportion_to_fit_and_kept_when_they_fit():
    assert scaled_epochs([10, 4], [1.0, 2.0], 2, 36) == [10, 4]  # 2 x (10 + 8) s: fits
    assert scaled_epochs([10, 4], [1.0, 2.0], 2, 12) == [3, 1]  # a third: 2 x (3 + 2) = 10 s
    assert scaled_epochs([6, 1, 1], [1.0, 4.0, 4.0], 5, 60) == [4, 1, 1]  # 5 x (4 + 8) = 60 s: the ones stay
    assert scaled_epochs([1, 8], [10.0, 1.0], 1, 14) == [1, 4]  # the 1 overshoots: the others give way
    with pytest.raises(PipelineError, match="cannot hold one epoch of each phase on 2 folds"):
        scaled_epochs([10, 4], [1.0, 2.0], 2, 5)


def budget_config(tmp_path, comp, name, minutes):
    phases = [{"epochs": 10, "lr": 3e-3}, {"epochs": 4, "lr": 1e-3}]
    return load_config(
        make_config(tmp_path, comp, name=name, train={"phases": phases}, runtime={"budget": minutes, "cache": False})
    )


def test_the_first_folds_speed_decides_every_folds_epochs(tmp_path, comp, monkeypatch, capsys):
    monkeypatch.setattr(clock.Clock, "epoch_seconds", lambda self, rate: [1.0, 2.0])  # the speed, made exact
    cfg = budget_config(tmp_path, comp, "fits", 0.2)  # 12 s for 2 folds of 10 + 4 epochs of 1 s and 2 s
    folds.main(cfg)
    train.main(cfg, fold=0)
    decision = json.loads((RunDir(cfg.run_dir).root / "budget.json").read_text())
    assert decision["epochs"] == [3, 1] and decision["configured_epochs"] == [10, 4]
    assert "10+4 epochs (by phase) would take about 36.0 s; 3+1 fit" in capsys.readouterr().out
    monkeypatch.setattr(clock.Clock, "epoch_seconds", lambda self, rate: [0.1, 0.1])  # fold 1 keeps fold 0's decision
    train.main(cfg, fold=1)
    for k in (0, 1):
        history = pd.read_csv(RunDir(cfg.run_dir).history(k))
        assert list(history.epoch) == [0, 1, 2, 3] and list(history.phase) == [0, 0, 0, 1]


def test_a_budget_too_small_for_one_epoch_each_is_refused_before_any_epoch(tmp_path, comp, monkeypatch):
    monkeypatch.setattr(clock.Clock, "epoch_seconds", lambda self, rate: [1.0, 2.0])
    cfg = budget_config(tmp_path, comp, "tight", 0.05)  # 3 s: one epoch of each phase on two folds takes 6
    folds.main(cfg)
    with pytest.raises(PipelineError, match=r"runtime.budget: 3.0 s cannot hold one epoch .*about 6.0 s"):
        train.main(cfg, fold=0)
    run = RunDir(cfg.run_dir)
    assert not (run.root / "budget.json").exists() and not run.last(0).exists()
    with pytest.raises(PipelineError, match="runtime.budget: Input should be greater than 0"):
        load_config(make_config(tmp_path, comp, name="zero", runtime={"budget": 0}))


def test_a_budgeted_run_goes_through_ensemble_report_and_the_leaderboard(tmp_path, comp):
    """Trained under runtime.budget through Make, the run's effective config (the decided epochs)
    is what infer, the stamps, the report and the leaderboard see: one make ensemble submits, and a
    second finds everything up to date."""
    phases = [{"epochs": 400, "lr": 1e-3}]  # far more than 0.02 min (1.2 s) holds on two folds
    config = make_config(tmp_path, comp, name="budgeted", train={"phases": phases}, runtime={"budget": 0.02})
    common = [f"CONFIG={config}", f"SUBMISSIONS={tmp_path / 'subs'}"]
    make("ensemble", *common)
    run = RunDir(tmp_path / "runs" / "budgeted")
    decided = json.loads((run.root / "budget.json").read_text())["epochs"]
    assert decided[0] < 400
    for k in (0, 1):
        assert len(pd.read_csv(run.history(k))) == decided[0]
    assert (tmp_path / "subs" / "budgeted.csv").is_file()
    assert make("-q", "ensemble", *common, check=False).returncode == 0  # the stamps agree with the run
    # the report and the leaderboard read the effective config as their make targets do (in this
    # process: a stage's own process adds nothing Make has not shown above)
    report.main(load_config(config))
    assert "fold 0" in (run.root / "report.html").read_text()
    leaderboard.main(tmp_path / "runs")
    board = pd.read_csv(tmp_path / "runs" / "leaderboard.csv").set_index("run")
    assert board.loc["budgeted", "epochs"] == decided[0]
