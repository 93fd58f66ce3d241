"""make leaderboard: every run folder read as the stages left it, ranked by CV in its metric's
direction, one table per folds file and metric; finished, running, stale and partial runs told apart."""

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
from helpers import CLASSES, make_competition, make_config, make_numbers, number_config

from pipeline.config_files import load_config, to_yaml
from pipeline.errors import PipelineError
from pipeline.io import write_text
from pipeline.runs import RunDir
from pipeline.stages import leaderboard
from pipeline.stamps import write_stamp


def hand_run(config, first: np.ndarray, infer: bool = True, folds=(0, 1), seconds: float = 30.0):
    """A run folder as train (and infer) leave it, with chosen predictions: `first`, one value per
    training row (a class's probability of ants, or a number), OOF for folds `folds` of two."""
    cfg = load_config(config)
    run, d = RunDir(cfg.run_dir), cfg.data
    write_text(run.config, to_yaml(cfg))
    train = pd.read_csv(d.path(d.train_csv), dtype=str)
    oof = pd.DataFrame({d.id_col: train[d.id_col], "fold": np.arange(len(train)) % 2, d.label_col: train[d.label_col]})
    if d.numeric:
        oof["prediction"] = first
    else:
        oof[CLASSES] = np.stack([first, 1 - first], axis=1)
    for stage in ["train"] + (["infer"] if infer else []):
        write_stamp(cfg, stage)
    doc = {"train": {"when": "2026-12-01 10:00:00 +0000", "command": f"python -m pipeline train {config} --fold 0"}}
    write_text(run.provenance, json.dumps(doc))
    for k in folds:
        write_text(run.fold_oof(k), oof[oof.fold == k].to_csv(index=False))
        write_text(run.history(k), pd.DataFrame({"epoch": [0, 1], "seconds": [seconds, seconds]}).to_csv(index=False))
    if infer:
        write_text(run.oof, oof.to_csv(index=False))
    return run


def labels_of(comp):
    return (pd.read_csv(comp / "train.csv").label == "ants").to_numpy()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    comp = make_competition(tmp / "comp")
    ants = labels_of(comp)
    right = np.where(ants, 0.9, 0.1)
    half = np.where(np.arange(len(ants)) % 2 == 0, right, 1 - right)  # fold 0 right, fold 1 wrong
    runs = {
        "best": hand_run(make_config(tmp, comp, name="best"), right),
        "half": hand_run(make_config(tmp, comp, name="half", train={"batch_size": 4}), half),
        "partial": hand_run(make_config(tmp, comp, name="partial"), right, infer=False, folds=(0,)),
        "busy": hand_run(make_config(tmp, comp, name="busy"), right * 0.9 + 0.05),
        "edited": hand_run(make_config(tmp, comp, name="edited"), half),
        "ll": hand_run(make_config(tmp, comp, name="ll", metric="log_loss"), right),
    }
    write_text(runs["busy"].root / "locks" / "x.json", json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    make_config(tmp, comp, name="edited", train={"batch_size": 2})  # its config file asks for other settings now
    nums = make_numbers(tmp / "nums")
    y = pd.read_csv(nums / "train.csv").score.to_numpy()
    for name, noise in (("near", 0.1), ("far", 2.0)):
        hand_run(number_config(tmp, nums, name=name), y + noise * np.cos(np.arange(len(y))))
    (tmp / "runs" / "not-a-run").mkdir()  # a folder no stage wrote is left out
    return tmp, leaderboard.main(tmp / "runs")


def group(tables, metric):
    (df,) = [t for t in tables if t.metric.iloc[0] == metric]
    return df.set_index("run")


def test_runs_are_ranked_by_cv_in_their_metrics_direction_one_table_per_folds_file_and_metric(board):
    tmp, tables = board
    assert {t.metric.iloc[0] for t in tables} == {"accuracy", "log_loss", "rmse"}
    acc = group(tables, "accuracy")
    assert list(acc.index[:2]) == ["best", "busy"] and acc.loc["best", "cv"] == 1.0
    # one fold of two scores 1.0 too, but is no CV to rank against whole runs: last, unranked
    assert acc.index[-1] == "partial" and acc.loc["partial", "cv"] == 1.0 and pd.isna(acc.loc["partial", "rank"])
    assert list(acc["rank"].dropna()) == [1, 2, 3, 4]
    assert acc.loc["half", "cv"] == pytest.approx(0.5) and acc.loc["half", "folds"] == "1.0000 0.0000"
    assert acc.loc["half", "cv_std"] == pytest.approx(0.5) and acc.loc["best", "cv_std"] == 0
    assert acc.loc["half", "fold_mean"] == pytest.approx(0.5)
    assert acc.loc["best", "tta_cv"] == 1.0 and np.isnan(acc.loc["partial", "tta_cv"])
    assert acc.loc["best", "train_min"] == 2.0  # two folds of two 30 s epochs
    assert acc.loc["best", "corr_best"] == pytest.approx(1.0) and acc.loc["half", "corr_best"] < 0.5
    assert acc.loc["half", "settings"] == "batch_size=4" and acc.loc["best", "settings"] == "batch_size=8"
    rmse = group(tables, "rmse")
    assert list(rmse.index) == ["near", "far"] and rmse.loc["near", "cv"] < rmse.loc["far", "cv"]  # lower first
    assert "not-a-run" not in pd.read_csv(tmp / "runs" / "leaderboard.csv").run.to_list()


def test_status_tells_finished_running_stale_and_partial_runs_apart(board):
    acc = group(board[1], "accuracy")
    assert acc.loc["best", "status"] == "finished"
    assert acc.loc["busy", "status"] == "running"  # a live process holds its lock
    assert acc.loc["edited", "status"] == "stale"  # its config file now asks for other settings
    assert acc.loc["partial", "status"] == "1/2 folds"


def test_the_csv_and_the_page_hold_every_table(board):
    tmp, tables = board
    csv = pd.read_csv(tmp / "runs" / "leaderboard.csv")
    assert len(csv) == sum(len(t) for t in tables) == 8 and set(csv.group.str.split(",").str[-1].str.strip()) == {
        "accuracy",
        "log_loss",
        "rmse",
    }
    page = (tmp / "runs" / "leaderboard.html").read_text()
    assert page.count("<h2>") == 3 and "lower is better" in page and "higher is better" in page


def test_an_empty_or_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(PipelineError, match="no such folder"):
        leaderboard.main(tmp_path / "nothing")
    (tmp_path / "runs").mkdir()
    with pytest.raises(PipelineError, match="no experiment folder"):
        leaderboard.main(tmp_path / "runs")


def test_a_retrieval_run_is_ranked_by_its_guesses_cross_fitted_map(identification, tmp_path):
    """Infer's nearest neighbours with the new-individual threshold cross-fitted, not the head's classes."""
    from pipeline import retrieval
    from pipeline.labels import encode

    _, _, cfg = identification
    (table,) = leaderboard.build(cfg.run_dir.parent)
    row = table.set_index("run").loc[cfg.name]
    oof = pd.read_csv(RunDir(cfg.run_dir).oof)
    classes = [c for c in oof.columns if c not in ("image", "fold", "whale")]
    want = retrieval.choose(encode(oof["whale"], classes), oof[classes].to_numpy(), oof["fold"].to_numpy(), 5, True)
    assert row["cv"] == pytest.approx(want.cross_fitted) and row["tta_cv"] == pytest.approx(want.cross_fitted)
