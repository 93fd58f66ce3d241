"""The Makefile: folds -> train -> infer -> ensemble as real file targets, on a few dozen 40 px
images and a tiny model; only stale stages rerun, make -n writes nothing, upgrades keep runs."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import ROOT, make, make_command, make_competition, make_config

# Each fold's process under make -j2 has one core, not two: its sums round differently. SGD with
# BatchNorm as initialised keeps that noise small; Adam's sign-like first steps and batch statistics
# of 8 random-init images would amplify it.
J2_SAFE = {"optimizer": "sgd", "phases": [{"epochs": 2, "lr": 1e-2, "freeze_bn": True}]}
DETERMINISTIC = {"deterministic": True}


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """A tiny experiment through `make ensemble`, deterministic so that a rebuilt file is bit-identical:
    the chain test reads it, the rebuild test spoils its files and checks that Make restores them, the
    make -j2 test trains its twin."""
    tmp_path = tmp_path_factory.mktemp("chain")
    comp = make_competition(tmp_path / "comp")
    config = make_config(tmp_path, comp, train=J2_SAFE, runtime=DETERMINISTIC)
    common = [f"CONFIG={config}", f"SUBMISSIONS={tmp_path / 'subs'}"]
    return tmp_path, comp, config, common, make("ensemble", *common).stdout


def test_chain_through_make(chained):
    tmp_path, comp, config, common, out = chained
    run = tmp_path / "runs" / "tiny"

    # folds: every image once, both folds used
    folds = pd.read_csv(tmp_path / "folds" / "comp.csv")
    assert folds.image_id.is_unique and set(folds.fold) == {0, 1} and len(folds) == 32

    # train: per fold a checkpoint with config and classes, a history row per epoch, OOF of its fold
    for k in (0, 1):
        ckpt = torch.load(run / f"fold{k}" / "best.pt", weights_only=True)
        assert ckpt["classes"] == ["ants", "bees"] and ckpt["config"]["model"]["backbone"] == "test_efficientnet"
        hist = pd.read_csv(run / f"fold{k}" / "history.csv")
        assert hist.epoch.tolist() == [0, 1] and np.isfinite(hist.valid_loss).all()
        oof = pd.read_csv(run / f"fold{k}" / "oof.csv")
        assert set(oof.image_id) == set(folds.image_id[folds.fold == k]) and (oof.fold == k).all()

    # infer: per-fold and mean test probabilities summing to 1; OOF of all folds in folds order
    test = pd.read_csv(run / "test.csv")
    folds_mean = np.mean([pd.read_csv(run / f"test_fold{k}.csv")[["ants", "bees"]] for k in (0, 1)], 0)
    assert np.allclose(test[["ants", "bees"]], folds_mean, atol=1e-6)
    assert np.allclose(test[["ants", "bees"]].sum(axis=1), 1, atol=1e-5)
    oof = pd.read_csv(run / "oof.csv")
    assert oof.image_id.tolist() == folds.image_id.tolist()

    # ensemble: the sample's exact format, and the CV printed
    sub = pd.read_csv(tmp_path / "subs" / "tiny.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub.image_id.tolist() == sample.image_id.tolist()
    assert set(sub.label) <= {"ants", "bees"}
    assert "CV accuracy" in out
    # the estimate after a fold's first steps: fold 0 then the run, fold 1 its own rest
    assert re.search(r"fold 0 phase 0: \d+ img/s in training steps.* the rest of the run .* \(1 more fold\)", out)
    assert "fold 1 phase 0:" in out and "(0 more folds)" in out
    assert (run / "config.yaml").is_file()
    assert "report.html" in make("report", *common).stdout and (run / "report.html").is_file()
    assert "pipeline report" not in make("report", *common).stdout  # up to date

    # targets are real files: nothing is stale now; an infer-only change reruns infer, not training
    assert make("-q", "ensemble", *common, check=False).returncode == 0
    plan = make("-n", "ensemble", *common, "SET=infer.tta.merge=gmean").stdout
    assert "pipeline infer" in plan and "pipeline train" not in plan
    plan = make("-n", "ensemble", *common, "SET=train.phases.0.epochs=1").stdout
    assert plan.count("pipeline train") == 2

    # an ensemble file: Make brings each member config up to date (training the new one), then
    # writes the chosen method's submission and its JSON
    other = make_config(
        tmp_path, comp, name="tiny2", train={"phases": [{"epochs": 1, "lr": 3e-3}], "batch_size": 8, "seed": 7}
    )
    spec = tmp_path / "both.yaml"
    spec.write_text(f"name: both\nmembers: [{config}, {other}]\nmethod: vote\nout_dir: {tmp_path / 'subs'}\n")
    out = make("ensemble", f"ENSEMBLE={spec}").stdout
    assert f"pipeline train {other}" in out and f"pipeline train {config}" not in out
    assert "ensemble: hierarchical" in out and (tmp_path / "subs" / "both.csv").is_file()
    assert json.loads((tmp_path / "subs" / "both.json").read_text())["method"] == "vote"
    assert "pipeline" not in make("ensemble", f"ENSEMBLE={spec}").stdout  # up to date: nothing runs


def test_lr_find_and_config_errors_through_make(tmp_path, comp):
    config = make_config(tmp_path, comp)
    run = tmp_path / "runs" / "tiny"
    out = make("lr-find", f"CONFIG={config}", "SET=lr_find.num_iter=8").stdout  # the folds first
    assert "suggested lr" in out and len(pd.read_csv(run / "lr_find.csv")) <= 8
    assert "pipeline lr_find" not in make("-n", "lr-find", f"CONFIG={config}", "SET=lr_find.num_iter=8").stdout
    bad = make_config(tmp_path, comp, name="bad", train={"phases": [{"epochs": 0, "lr": 1e-3}]})
    res = make("train", f"CONFIG={bad}", check=False)
    assert res.returncode != 0 and "bad.yaml: train.phases.0.epochs" in res.stderr
    spec = tmp_path / "e.yaml"
    spec.write_text(f"name: e\nmembers: [{config}]\n")
    res = make("train", f"ENSEMBLE={spec}", check=False)
    assert res.returncode != 0 and "only `make ensemble` and `make bundle` take it" in res.stderr


def _interrupted(config, send) -> str:
    """`make train FOLD=0` (a session of its own, as a terminal's job), stopped by `send` once it
    has printed an epoch's line (printed after that epoch's last.pt is written); its stderr."""
    proc = subprocess.Popen(
        make_command("train", f"CONFIG={config}", "FOLD=0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as a terminal's job has it: a shell's background job (a CI runner's, say) ignores SIGINT,
        # and that would pass down to make and the stage
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:
        if line.startswith("fold 0 epoch "):
            send(proc)
            break
    return proc.communicate()[1]


def test_a_kill_ctrl_c_or_sigterm_costs_at_most_the_epoch_in_progress(tmp_path, comp):
    """SIGKILL the fold's process; then Ctrl-C (SIGINT to make and the stage, as a terminal sends
    it); then SIGTERM to make alone. Each time best.pt stays, an interrupt prints one line saying
    where the fold stopped, and make train resumes it, running only the epochs that were missing."""
    # 60 epochs of 16 images, about 3 s: a pause of this process (a garbage collection) cannot let
    # the fold run to its end between the line read and the signal sent
    phases = [{"epochs": 3, "lr": 1e-2, "frozen": True}, {"epochs": 57, "lr": 1e-3}]
    config = make_config(tmp_path, comp, train={"phases": phases})
    make("folds", f"CONFIG={config}")
    fold = tmp_path / "runs" / "tiny" / "fold0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", str(config), "--fold", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (fold / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    stopped = [torch.load(fold / "last.pt", weights_only=True)["epoch"]]
    for send in (lambda p: os.killpg(p.pid, signal.SIGINT), lambda p: os.kill(p.pid, signal.SIGTERM)):
        err = _interrupted(config, send)
        stopped.append(torch.load(fold / "last.pt", weights_only=True)["epoch"])
        assert stopped[-1] < 59 and (fold / "best.pt").is_file() and not (fold / "oof.csv").exists(), err
        ours = [line for line in err.splitlines() if line.startswith("interrupted:")]
        assert len(ours) == 1 and "Traceback" not in err, err
        assert ours[0].startswith("interrupted: fold 0 stopped after epoch") and f"epoch {stopped[-1] + 1}" in ours[0]
    assert make("-q", "train", f"CONFIG={config}", "FOLD=0", check=False).returncode == 1  # not done
    out = make("train", f"CONFIG={config}", "FOLD=0").stdout
    assert f"resuming after epoch {stopped[-1]}" in out and "missing" not in out
    assert out.count("fold 0 epoch ") == 59 - stopped[-1]  # only the epochs that were missing
    hist = pd.read_csv(fold / "history.csv")
    assert hist.epoch.tolist() == list(range(60)) and (fold / "oof.csv").is_file()
    assert not (fold.parent / "fold1").exists()  # FOLD=0: that fold alone


def test_mining_and_pseudo_labels_chain_through_make(tmp_path):
    """make train on an experiment that learns from another's hard negatives and pseudo-labels
    builds that one first (train, infer, mine, pseudo); a second make is a no-op."""
    comp = make_competition(tmp_path / "comp", classes=("neg", "pos"), counts={"neg": 24, "pos": 8})
    one_epoch = {"phases": [{"epochs": 1, "lr": 3e-3}], "batch_size": 8}
    data = {"root": str(comp), "negative_class": "neg"}
    a = make_config(
        tmp_path,
        comp,
        name="a",
        data=data,
        train={**one_epoch, "neg_fraction": 0.5},
        mine={"min_score": 0.0, "top_k": 2},
        pseudo={"threshold": 0.0},
    )
    b = make_config(
        tmp_path,
        comp,
        name="b",
        data=data,
        train={**one_epoch, "hard_negatives_from": str(a), "pseudo_labels_from": str(a)},
    )
    out = make("train", f"CONFIG={b}").stdout
    runs = tmp_path / "runs"
    for step in ("pipeline train", "pipeline infer", "pipeline mine", "pipeline pseudo"):
        assert f"{step} {a}" in out
    assert out.count(f"pipeline train {b}") == 2 and "false-positive rate" in out
    assert len(pd.read_csv(runs / "a" / "hard_negatives.csv")) == 4
    assert len(pd.read_csv(runs / "a" / "pseudo_labels.csv")) == 2 * 10
    assert all((runs / "b" / f"fold{k}" / "oof.csv").is_file() for k in (0, 1))
    again = make("train", f"CONFIG={b}").stdout
    assert "pipeline train" not in again and "pipeline mine" not in again


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_dry_runs_write_nothing_and_an_added_key_keeps_runs_up_to_date(tmp_path, comp, chained):
    config = make_config(tmp_path, comp)
    before = _files(tmp_path)
    plan = make("-n", "ensemble", f"CONFIG={config}", f"SUBMISSIONS={tmp_path / 'subs'}").stdout
    assert "pipeline folds" in plan and plan.count("pipeline train") == 2 and "pipeline infer" in plan
    assert _files(tmp_path) == before  # make -n: a plan, nothing written
    # A release that adds keys with defaults (here train.aug's) finds stamps written without them:
    # the shared finished run, its stamps stripped of those keys
    finished, _, _, common, _ = chained
    assert make("-q", "ensemble", *common, check=False).returncode == 0
    for stamp in (finished / "runs" / "tiny" / "stamps").glob("*.yaml"):
        doc, written = yaml.safe_load(stamp.read_text()), stamp.stat().st_mtime_ns
        stamp.write_text(yaml.safe_dump({k: v for k, v in doc.items() if not k.startswith("train.aug.")}))
        os.utime(stamp, ns=(written, written))
    done = _files(finished)
    assert make("-q", "ensemble", *common, check=False).returncode == 0
    assert "pipeline" not in make("ensemble", *common).stdout and _files(finished) == done
    # but the key set away from its default retrains, and make -n says so without writing
    plan = make("-n", "ensemble", *common, "SET=train.aug.vflip=0.5").stdout
    assert plan.count("pipeline train") == 2 and _files(finished) == done
    assert make("-q", "ensemble", *common, "SET=train.aug.vflip=0.5", check=False).returncode == 1


def test_a_copied_and_renamed_competition_folder_keeps_every_fold_up_to_date(chained):
    """The folder copied (every file newer than the run) under another name: the folds file is
    found by train.csv's digest, and only the submission, which reads the sample's time, is made."""
    finished, comp, _, common, _ = chained
    moved = finished / "disk2" / "renamed"
    moved.parent.mkdir()
    subprocess.run(["cp", "-r", str(comp), str(moved)], check=True)  # no -p: new times
    where = [*common, f"SET=data.root={moved}"]
    done = _files(finished / "runs")
    assert make("-q", "infer", *where, check=False).returncode == 0
    out = make("ensemble", *where).stdout
    assert "pipeline folds" not in out and "pipeline train" not in out and "pipeline infer" not in out
    assert _files(finished / "runs") == done


def test_help_lists_every_target_and_variable():
    out = make("help").stdout
    assert make().stdout == out  # a bare make prints the same
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    variables = set(re.findall(r"^([A-Z]+) \?=", makefile, re.M))
    assert {"folds", "train", "infer", "ensemble", "lr-find", "mine", "pseudo", "demo", "test"} <= targets
    assert {"CONFIG", "SET", "FOLD", "ENSEMBLE", "RUNS", "NAME", "PY"} <= variables
    for name in targets:
        assert re.search(rf"^  make {name}\s+\S", out, re.M), name
    for name in variables:
        assert re.search(rf"^  {name}=\S*\s+\S", out, re.M), name


def test_runs_without_name_never_take_the_configs_submission(tmp_path):
    """RUNS= blends other experiments: without NAME= it is named as `pipeline ensemble` names it
    (one run: its folder; several: ensemble), never submissions/<CONFIG's experiment>.csv."""
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        for f in ("test.csv", "oof.csv"):
            (tmp_path / run / f).write_text("id\n")
    subs = tmp_path / "subs"
    for runs, name in ((f"{tmp_path / 'a'} {tmp_path / 'b'}", "ensemble"), (f"{tmp_path / 'a'}/", "a")):
        plan = make("-n", "ensemble", "bundle", f"RUNS={runs}", f"SUBMISSIONS={subs}").stdout
        assert f"--name {name} --out-dir {subs}" in plan and f"bundle {runs} --name {name} " in plan, plan
    plan = make("-n", "ensemble", f"RUNS={tmp_path / 'a'} {tmp_path / 'b'}", "NAME=ab", f"SUBMISSIONS={subs}").stdout
    assert f"--name ab --out-dir {subs}" in plan


# ----------------------------------------------------------------------------- farming: make -j, LAUNCH


def _recorder(tmp_path, name: str, run: str) -> tuple:
    """A script that logs each call (start and end times, PIPELINE_JOBS, its arguments), then runs `run "$@"`."""
    log, script = tmp_path / f"{name}.log", tmp_path / f"{name}.sh"
    script.write_text(
        "#!/bin/bash\n"
        f'echo "start $(date +%s.%N) ${{PIPELINE_JOBS:-none}} $*" >> {log}\n'
        f'{run} "$@"; rc=$?\n'
        f'echo "end $(date +%s.%N) $*" >> {log}\n'
        "exit $rc\n"
    )
    script.chmod(0o755)
    return script, log


def _calls(log, word: str) -> list[tuple[float, float, str]]:
    """(start, end, PIPELINE_JOBS) of each logged call whose arguments hold `word`."""
    lines = [ln.split(" ", 3) for ln in log.read_text().splitlines()]
    starts = [(float(t), jobs, args) for kind, t, jobs, args in (ln for ln in lines if ln[0] == "start")]
    ends = {" ".join(ln[2:]): float(ln[1]) for ln in lines if ln[0] == "end"}
    return [(s, ends[args], jobs) for s, jobs, args in starts if word in args.split()]


def test_make_j2_trains_two_folds_at_once_as_one_at_a_time_does(chained, tmp_path):
    finished, comp, _, _, _ = chained  # "tiny", trained one fold at a time
    two = make_config(finished, comp, name="two", train=J2_SAFE, runtime=DETERMINISTIC)
    python, log = _recorder(tmp_path, "python", sys.executable)
    make("-j", "2", "train", f"CONFIG={two}", f"PY={python}")
    (s0, e0, jobs0), (s1, e1, jobs1) = _calls(log, "train")
    assert s0 < e1 and s1 < e0, "the two folds' processes ran at the same time"
    assert jobs0 == jobs1 == "2"  # each took its share of the cores
    for k in (0, 1):
        a = torch.load(finished / "runs" / "tiny" / f"fold{k}" / "last.pt", weights_only=True)["model"]
        b = torch.load(finished / "runs" / "two" / f"fold{k}" / "last.pt", weights_only=True)["model"]
        for key, value in a.items():
            assert torch.allclose(b[key].float(), value.float(), rtol=1e-3, atol=1e-4), key
    assert make("-q", "train", f"CONFIG={two}", check=False).returncode == 0


def test_launch_prefixes_every_stage_command(tmp_path, comp):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}]})
    launcher, log = _recorder(tmp_path, "launcher", "")
    make("train", f"CONFIG={config}", f"LAUNCH={launcher}")
    stages = [ln.split(" ", 3)[3].split()[2:4] for ln in log.read_text().splitlines() if ln.startswith("start")]
    assert stages == [["pipeline", "folds"], ["pipeline", "train"], ["pipeline", "train"]]
    assert (tmp_path / "runs" / "tiny" / "fold1" / "oof.csv").is_file()  # each ran through the launcher
    # the rest of the chain, planned: every command behind the launcher too
    plan = make("-n", "ensemble", f"CONFIG={config}", f"LAUNCH={launcher}").stdout.splitlines()
    assert [line.split()[:4] for line in plan] == [[str(launcher), sys.executable, "-m", "pipeline"]] * 2
    assert [line.split()[4] for line in plan] == ["infer", "ensemble"]


def test_every_deleted_or_damaged_artifact_is_rebuilt_by_a_plain_make(chained):
    """Delete or damage best.pt, a fold's oof.csv, oof.csv, test.csv or the folds file: a plain
    `make ensemble` rebuilds it, and only what depends on it. With runtime.deterministic the
    rebuilt files are bit-identical to the first ones (a retrained fold included), through Make,
    so the finished run is left as the chain test found it."""
    tmp_path, _, _, common, _ = chained
    run, folds_csv = tmp_path / "runs" / "tiny", tmp_path / "folds" / "comp.csv"
    files = [folds_csv, run / "fold0" / "oof.csv", run / "oof.csv", run / "test.csv", tmp_path / "subs" / "tiny.csv"]
    first = {f: f.read_bytes() for f in files}
    weights = torch.load(run / "fold1" / "best.pt", weights_only=True)["state_dict"]

    def rebuilt(spoils, expect_in_out: list[str], not_in_out: str):
        for spoil, path in spoils:
            spoil(path)
        out = make("ensemble", *common).stdout
        assert all(e in out for e in expect_in_out) and not_in_out not in out, out
        assert all(f.read_bytes() == b for f, b in first.items())
        assert make("-q", "ensemble", *common, check=False).returncode == 0  # nothing stale after

    def cut(p):  # in the middle of a line, as a full disk or a careless copy leaves a file
        data = p.read_bytes()[: p.stat().st_size // 2]
        p.write_bytes(data.rstrip(b"\n")[:-1])

    def rm(p):
        p.unlink()

    best, oof0 = run / "fold1" / "best.pt", run / "fold0" / "oof.csv"
    # deleted: fold 1's model (retrained), fold 0's OOF (written from last.pt), and infer's files;
    # damaged: fold 0's OOF and infer's test.csv
    rebuilt([(rm, best), (cut, oof0), (rm, run / "oof.csv"), (cut, run / "test.csv"), (rm, run / "test_fold1.csv")],
            [f"fold 1: {best} is missing", "fold 0: resuming after epoch 1", "pipeline infer"],
            f"fold 0: {run / 'fold0' / 'best.pt'} is missing")  # fmt: skip
    after = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # retrained bit for bit
    # the folds file deleted (made again, the same: no fold retrains) and fold 1's model damaged
    rebuilt([(rm, folds_csv), (cut, best)], ["pipeline folds", "fold 0: already trained", "fold 1: ", "damaged"],
            "fold 0: training the fold again")  # fmt: skip


def test_a_regression_and_an_ordinal_competition_through_make(numbers):
    for task, (tmp, comp, cfg, out) in numbers.items():
        run = cfg.run_dir
        # each fold's model rebuilds its number from its checkpoint: one output and the target's scale
        ckpt = torch.load(run / "fold0" / "best.pt", weights_only=True)
        assert ckpt["classes"] == ["prediction"] and ckpt["target_scale"]["kind"] == "standard"  # y_range null
        hist = pd.read_csv(run / "fold0" / "history.csv")
        assert {"valid_loss", f"valid_{cfg.metric}"} <= set(hist.columns) and "valid_accuracy" not in hist.columns
        # infer: one column of numbers; the TTA table in the metric
        test, oof = pd.read_csv(run / "test.csv"), pd.read_csv(run / "oof.csv")
        assert list(test.columns) == ["image_id", "prediction"] and np.isfinite(test.prediction).all()
        assert list(oof.columns) == ["image_id", "fold", "score", "prediction"]
        assert f"cv_{cfg.metric}" in pd.read_csv(run / "tta.csv").columns
        assert f"{task}: CV {cfg.metric} fold0" in out and not (run / "calibration.json").exists()
        # the submission: the sample's layout, a number (or a grade) per id
        sub, sample = pd.read_csv(tmp / "subs" / f"{task}.csv"), pd.read_csv(comp / "sample_submission.csv")
        assert list(sub.columns) == list(sample.columns) and sub.image_id.tolist() == sample.image_id.tolist()
        assert np.isfinite(pd.to_numeric(sub.score)).all()
        assert (
            make("-q", "ensemble", f"CONFIG={cfg_path(cfg)}", f"SUBMISSIONS={tmp / 'subs'}", check=False).returncode
            == 0
        )
    ordinal_run = numbers["ordinal"][2].run_dir
    cuts = json.loads((ordinal_run / "cutpoints.json").read_text())
    assert cuts["grades"] == [0, 1, 2, 3] and len(cuts["cuts"]) == 3
    assert set(pd.read_csv(numbers["ordinal"][0] / "subs" / "ordinal.csv").score) <= {0, 1, 2, 3}
    assert "cut-points" in numbers["ordinal"][3]


def cfg_path(cfg):
    return cfg.run_dir.parent.parent / f"{cfg.name}.yaml"
