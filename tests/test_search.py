"""make search: Optuna trials, each fold 0 of a config of its own trained through Make; a trial
worse than the median is pruned, a killed search resumes without repeating a finished trial,
and no trial starts that the budget cannot hold."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import ROOT, make_config

from pipeline.errors import PipelineError
from pipeline.lock import running
from pipeline.runs import RunDir
from pipeline.stages import search


@pytest.mark.parametrize(
    "space, message",
    [
        ("", "empty"),
        ("train.phases.0.lr: 0.1\n", "expected {low"),
        ("train.phases.0.lr: {low: 1, hihg: 2}\n", "unknown field 'hihg'"),
        ("train.phases.0.lr: {low: 0.3, high: 0.1}\n", "low < high"),
        ("train.phases.0.lr: {low: 0, high: 0.1, log: true}\n", "log needs low > 0"),
        ("model.backbone: {choices: []}\n", "non-empty list"),
        ("train.phases.0.lrr: {low: 0.1, high: 0.2}\n", "unknown key 'train.phases.0.lrr'"),
        ("train.phases.0.epochs: {low: 0, high: 3}\n", "train.phases.0.epochs: Input should be greater than or equal"),
    ],
)
def test_a_bad_space_is_a_one_line_error_naming_its_key(tmp_path, comp, space, message):
    config = make_config(tmp_path, comp)
    (tmp_path / "space.yaml").write_text(space)
    with pytest.raises(PipelineError, match=message) as e:
        dims = search.read_space(tmp_path / "space.yaml")
        search.check_space(config, dims, [], tmp_path / "space.yaml")
    assert "\n" not in str(e.value)


def test_budgets_read_as_durations_and_stop_before_a_trial_that_would_pass_them():
    assert [search.parse_budget(t) for t in ("90m", "2h", "1h30m", "45s", "2")] == [5400, 7200, 5400, 45, 120]
    for bad in ("0", "soon", "-5m"):
        with pytest.raises(PipelineError, match="BUDGET"):
            search.parse_budget(bad)
    assert search.why_stop([], None, 60, 0) is None  # the first trial always starts
    assert search.why_stop([30, 40, 100], None, 600, 570) == "30 s of the budget left; the median trial takes 40 s"
    assert search.why_stop([30, 40, 100], None, 600, 550) is None
    assert "TRIALS=3" in search.why_stop([1, 2, 3], 3, None, 0)
    with pytest.raises(PipelineError, match="BUDGET= .* or TRIALS="):
        search.main("x.yaml", "space.yaml")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked and told by hand, not through optimize
def test_the_pruner_compares_trials_at_the_same_share_of_their_schedule(tmp_path):
    study = search.open_study(tmp_path / "s.db", "s", False)  # a metric to minimise: losses as they are
    for _ in range(2):  # two short schedules, finished
        short = study.ask()
        for epoch, loss in enumerate([0.5, 0.3]):
            short.report(loss, search.schedule_share(epoch, 2))
        study.tell(short, 0.3)
    long = study.ask()
    long.report(1.0, search.schedule_share(0, 8))
    assert not long.should_prune()  # behind theirs at epoch 0, but an eighth of the way through its schedule
    for epoch, loss in enumerate([0.9, 0.8, 0.7], start=1):
        long.report(loss, search.schedule_share(epoch, 8))
    assert long.should_prune()  # half way (epoch 3 of 8) against theirs half way (epoch 0 of 2): 0.7 > 0.5


def states(db):
    study = search.open_study(db, "tiny", True)
    return [t.state.name.lower() for t in study.get_trials(deepcopy=False)]


def killed_in_its_second_epoch(config, space, runs) -> RunDir:
    """`python -m pipeline search` killed (SIGKILL) once a new trial's fold has finished two epochs;
    its make and its training stop with it. The trial's run folder."""
    before = set(runs.glob("tiny--t*"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", str(config), str(space), "--trials", "9"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = None
    for _ in range(600):
        new = [p for p in runs.glob("tiny--t*") if p not in before]
        run = RunDir(new[0]) if new else None
        if run is not None and len(search.epochs_so_far(run)) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(300):
        if not running(run.root):
            break
        time.sleep(0.1)
    assert not running(run.root) and not run.fold_oof(0).is_file()
    return run


def test_search_resumes_after_a_kill_prunes_a_worse_trial_and_stops_at_its_budget(tmp_path, comp, monkeypatch):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 3, "lr": 3e-3}], "batch_size": 8})
    space = tmp_path / "space.yaml"
    space.write_text(
        "train.phases.0.lr: {low: 1.0e-4, high: 100.0, log: true}\ntrain.phases.0.epochs: {low: 3, high: 20}"
    )
    runs, db = tmp_path / "runs", tmp_path / "runs" / "tiny--search.db"
    study = search.open_study(db, "tiny", True)
    monkeypatch.chdir(ROOT)
    study.enqueue_trial({"train.phases.0.lr": 3e-3, "train.phases.0.epochs": 3})  # the values TPE would draw
    first = search.main(config, space, trials=1)
    finished = RunDir(runs / os.path.basename(first.config[0])[:-5]).history(0)
    written = finished.stat().st_mtime_ns
    study.enqueue_trial({"train.phases.0.lr": 3e-3, "train.phases.0.epochs": 20})
    run = killed_in_its_second_epoch(config, space, runs)
    # run again: the dead trial runs again with its values, its fold resumed; the finished one does not
    table = search.main(config, space, trials=2)
    assert list(table.state) == ["complete", "fail", "complete"] and table.config[2] == table.config[1]
    assert [e for e, _ in search.epochs_so_far(run)] == list(range(20)) and finished.stat().st_mtime_ns == written
    assert "resuming after epoch" in run.log("train").read_text()
    # a clearly worse trial, once two have finished: stopped on the first valid loss seen
    study.enqueue_trial({"train.phases.0.lr": 100.0, "train.phases.0.epochs": 20})
    table = search.main(config, space, trials=3)
    assert list(table.state) == ["complete", "fail", "complete", "pruned"] and table.epochs[3] < 20
    assert (tmp_path / "search" / "tiny--best.yaml").is_file()
    # a budget shorter than the median trial starts none
    table = search.main(config, space, budget="1s")
    assert len(table) == 4 and pd.read_csv(db.with_suffix(".csv")).shape[0] == 4 and len(states(db)) == 4
