"""Bad input, as a new user makes it: every case ends with exit code 2 and one line on stderr
naming the file, row or config key (never a traceback), and leaves nothing half-written (no temp
file, no fold started, the folds file and earlier outputs as they were).

Each case mutates a fresh tiny competition (or its config, or its run), then runs one stage
through the command line's entry point, in this process (pipeline.__main__.main: the same path as
`python -m pipeline`, less the interpreter start); two cases run it as a real subprocess."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import make_competition, make_config, truncate
from PIL import Image

from pipeline.__main__ import main
from pipeline.config_files import load_config
from pipeline.data import read_image
from pipeline.stamps import stamp_path


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """The entry point turns SIGTERM and SIGHUP into SystemExit (lock.die_with_parent): undo it."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


class Case:
    """A competition in tmp/comp with its config tmp/tiny.yaml (2 folds, test model)."""

    def __init__(self, tmp: Path, **sections):
        self.tmp, self.comp = tmp, make_competition(tmp / "comp")
        self.config = make_config(tmp, self.comp, **sections)
        self.run = tmp / "runs" / "tiny"

    def folds(self):
        assert main(["folds", str(self.config)]) == 0

    def edit_csv(self, name: str, fn):
        path = self.comp / name
        fn(pd.read_csv(path, dtype=str)).to_csv(path, index=False)

    def edit_config(self, fn):
        doc = yaml.safe_load(self.config.read_text())
        fn(doc)
        self.config.write_text(yaml.safe_dump(doc))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's guard file (lock.acquire's, empty and kept)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".guard"
    }


def outputs(root: Path) -> dict[str, bytes]:
    """What the stages wrote: everything outside the competition folder and the decode caches."""
    return {k: v for k, v in snapshot(root).items() if not k.startswith(("comp/", "cache/")) and k != "tiny.yaml"}


def expect_error(case: Case, argv: list[str], capsys, *fragments: str) -> str:
    """Run; exit 2, one line, every fragment in it; nothing a stage wrote has changed (the run's
    config.yaml, stamps, provenance and logs aside, which record the attempt), no temp file left."""
    before = outputs(case.tmp)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    after = outputs(case.tmp)
    record = ("config.yaml", "stamps/", "provenance.json", "logs/")
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not any(r in k for r in record)} == set(), changed
    assert not [p for p in case.tmp.rglob("*.tmp")], "a temp file was left behind"
    assert not list(case.run.glob("locks/*.json")), "a lock was left behind"
    return lines[0]


def train_cmd(case: Case, *extra: str) -> list[str]:
    return ["train", str(case.config), *extra]


# ----------------------------------------------------------------------------- images

IMAGE_CASES = {
    "missing train image": (lambda p: p.unlink(), "image not found"),
    "empty train image": (lambda p: p.write_bytes(b""), "image is empty"),
    "truncated train image": (lambda p: truncate(p), "image is truncated or corrupt"),
    "text file named .jpg": (lambda p: p.write_text("not an image\n"), "cannot read image"),
}


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_bad_train_image_stops_before_the_first_epoch(tmp_path, capsys, name):
    case = Case(tmp_path)
    case.folds()
    spoil, message = IMAGE_CASES[name]
    spoil(case.comp / "train" / "tr005.jpg")
    expect_error(case, train_cmd(case), capsys, "train/tr005.jpg", message, "train.csv line 7")
    assert not (case.run / "fold0").exists()


def test_bad_test_image_stops_training_before_the_first_epoch(tmp_path, capsys):
    case = Case(tmp_path)
    case.folds()
    truncate(case.comp / "test" / "te003.jpg")
    expect_error(case, train_cmd(case), capsys, "test/te003.jpg", "sample_submission.csv line 5")


def test_odd_but_valid_images_load_as_upright_rgb_and_train(tmp_path):
    """Grayscale, RGBA, palette, 16-bit, EXIF-rotated and a PNG named .jpg, in one training run."""
    case = Case(tmp_path, train={"phases": [{"epochs": 1, "lr": 1e-3}], "batch_size": 8})
    train_dir, rgb = case.comp / "train", np.asarray(Image.open(case.comp / "train" / "tr000.jpg"))
    Image.fromarray(rgb).convert("L").save(train_dir / "tr000.jpg", format="JPEG")
    Image.fromarray(rgb).convert("RGBA").save(train_dir / "tr001.jpg", format="PNG")
    Image.fromarray(rgb).convert("P").save(train_dir / "tr002.jpg", format="PNG")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(train_dir / "tr003.jpg", format="PNG")
    tall = Image.fromarray(rgb)  # 48 wide, 40 high; stored rotated, with EXIF orientation 6
    exif = tall.getexif()
    exif[0x0112] = 6
    tall.transpose(Image.Transpose.ROTATE_90).save(train_dir / "tr004.jpg", exif=exif)
    for i in range(5):
        img = read_image(train_dir / f"tr00{i}.jpg")
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert read_image(train_dir / "tr004.jpg").shape[:2] == rgb.shape[:2]  # turned back upright
    case.folds()
    assert main(train_cmd(case)) == 0 and (case.run / "fold1" / "oof.csv").is_file()


# ----------------------------------------------------------------------------- train.csv

CSV_CASES = {
    "train.csv missing": (lambda c: (c.comp / "train.csv").unlink(), ["data.train_csv:", "train.csv does not exist"]),
    "no label column": (
        lambda c: c.edit_csv("train.csv", lambda d: d.rename(columns={"label": "class"})),
        ["train.csv: no column 'label'"],
    ),
    "empty label": (
        lambda c: c.edit_csv("train.csv", lambda d: d.assign(label=d.label.where(d.index != 4, ""))),
        ["train.csv: line 6: empty 'label'"],
    ),
    "duplicate id": (
        lambda c: c.edit_csv("train.csv", lambda d: d.assign(image_id=d.image_id.where(d.index != 3, "tr000"))),
        ["train.csv: line 5: duplicate image_id 'tr000'"],
    ),
    "header only": (lambda c: c.edit_csv("train.csv", lambda d: d.iloc[:0]), ["train.csv: no rows"]),
    "not a CSV": (
        lambda c: (c.comp / "train.csv").write_bytes(b"\xff\xfe\x00\x81binary"),
        ["train.csv: not a readable CSV"],
    ),
    "class too small for the folds": (
        lambda c: c.edit_csv("train.csv", lambda d: d.assign(label=d.label.where(d.index != 0, "wasps"))),
        ["class 'wasps' has 1 rows, fewer than folds.n_folds=2"],
    ),
    "class named like a column": (
        lambda c: c.edit_csv("train.csv", lambda d: d.assign(label=d.label.replace("bees", "fold"))),
        ["class name 'fold' clashes"],
    ),
}


@pytest.mark.parametrize("name", CSV_CASES)
def test_train_csv_mistakes(tmp_path, capsys, name):
    case = Case(tmp_path)
    spoil, fragments = CSV_CASES[name]
    spoil(case)
    stage = "train" if name == "class named like a column" else "folds"
    if stage == "train":
        case.folds()
    expect_error(case, [stage, str(case.config)], capsys, *fragments)


# ----------------------------------------------------------------------------- sample submission

SAMPLE_CASES = {
    "sample missing": (
        lambda c: (c.comp / "sample_submission.csv").unlink(),
        ["data.sample_submission:", "sample_submission.csv does not exist"],
    ),
    "id column named otherwise": (
        lambda c: c.edit_csv("sample_submission.csv", lambda d: d.rename(columns={"image_id": "id"})),
        ["first column is 'id'", "data.sample_id_col"],
    ),
    "duplicate test id": (
        lambda c: c.edit_csv(
            "sample_submission.csv", lambda d: d.assign(image_id=d.image_id.where(d.index != 2, "te000"))
        ),
        ["sample_submission.csv: line 4: duplicate image_id 'te000'"],
    ),
    "no prediction column": (
        lambda c: c.edit_csv("sample_submission.csv", lambda d: d[["image_id"]]),
        ["no prediction column"],
    ),
    "class columns that are not the classes": (
        lambda c: c.edit_csv("sample_submission.csv", lambda d: d.assign(wasps=0.5, hornets=0.5)),
        ["one column per class"],
    ),
}


@pytest.mark.parametrize("name", SAMPLE_CASES)
def test_sample_submission_mistakes_stop_training_before_the_first_epoch(tmp_path, capsys, name):
    case = Case(tmp_path)
    case.folds()
    spoil, fragments = SAMPLE_CASES[name]
    spoil(case)
    expect_error(case, train_cmd(case), capsys, *fragments)
    assert not (case.run / "fold0").exists()


def test_integer_labels_and_an_ambiguous_sample_name_the_key(tmp_path, capsys):
    """Classes 1..5 and a sample of 0s: codes or a placeholder? Refused before training."""
    comp = make_competition(tmp_path / "comp", n_train=40, classes=("1", "2", "3", "4", "5"))
    pd.DataFrame({"image_id": [f"te{i:03d}" for i in range(10)], "label": 0}).to_csv(
        comp / "sample_submission.csv", index=False
    )
    case = Case.__new__(Case)
    case.tmp, case.comp, case.run = tmp_path, comp, tmp_path / "runs" / "tiny"
    case.config = make_config(tmp_path, comp)
    case.folds()
    expect_error(case, train_cmd(case), capsys, "sample_submission.csv", "data.submission_classes")


# ----------------------------------------------------------------------------- config

CONFIG_CASES = {
    "unknown key": (lambda d: d["train"].update(epochz=3), [], ["tiny.yaml: unknown key 'train.epochz'"]),
    "wrong type": (lambda d: d["train"].update(batch_size="big"), [], ["tiny.yaml: train.batch_size"]),
    "zero epochs": (lambda d: d["train"]["phases"][0].update(epochs=0), [], ["train.phases.0.epochs"]),
    "backbone typo": (
        lambda d: d["model"].update(backbone="test_efficientnet_"),
        [],
        ["model.backbone: 'test_efficientnet_' is not a timm model name; did you mean test_efficientnet"],
    ),
    "weights file missing": (
        lambda d: d["model"].update(pretrained="weights/nowhere.pth"),
        [],
        ["tiny.yaml: model.pretrained: weights/nowhere.pth is not a file"],
    ),
    "bad override": (lambda d: None, ["train.batch_size"], ["override 'train.batch_size'", "expected key=value"]),
    "override of an unknown key": (lambda d: None, ["train.batchsize=4"], ["unknown key 'train.batchsize'"]),
    "fold out of range": (lambda d: None, ["--fold", "5"], ["--fold 5: the folds file has folds 0..1"]),
}


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_config_mistakes(tmp_path, capsys, name):
    case = Case(tmp_path)
    case.folds()
    edit, extra, fragments = CONFIG_CASES[name]
    case.edit_config(edit)
    expect_error(case, train_cmd(case, *extra), capsys, *fragments)
    assert not (case.run / "fold0").exists()


def test_yaml_syntax_error_names_the_file(tmp_path, capsys):
    case = Case(tmp_path)
    case.config.write_text("name: tiny\ntrain: {phases: [\n")
    expect_error(case, ["folds", str(case.config)], capsys, "tiny.yaml")


def test_folds_file_of_another_split_is_not_overwritten(tmp_path, capsys):
    case = Case(tmp_path)
    case.folds()
    case.edit_config(lambda d: d["folds"].update(seed=3))
    expect_error(case, ["folds", str(case.config)], capsys, "comp.csv: made with", "'seed': 3")


# ----------------------------------------------------------------------------- runs and state


@pytest.fixture
def trained_case(tmp_path):
    case = Case(tmp_path, train={"phases": [{"epochs": 1, "lr": 1e-3}], "batch_size": 8})
    case.folds()
    assert main(train_cmd(case)) == 0
    return case


def test_infer_without_a_checkpoint(trained_case, capsys):
    (trained_case.run / "fold1" / "best.pt").unlink()
    expect_error(trained_case, ["infer", str(trained_case.config)], capsys, "fold1/best.pt: checkpoint not found")


def test_infer_with_a_damaged_checkpoint(trained_case, capsys):
    best = trained_case.run / "fold0" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    expect_error(trained_case, ["infer", str(trained_case.config)], capsys, "fold0/best.pt: damaged checkpoint")


def test_infer_with_a_foreign_checkpoint(trained_case, capsys):
    argv = ["infer", str(trained_case.config), "train.seed=9"]
    expect_error(trained_case, argv, capsys, "fold0/best.pt: trained with other settings", "train.seed")


def test_a_diverging_lr_stops_with_one_line_and_keeps_nothing_broken(tmp_path, capsys):
    """One batch per epoch (the case that once ended in scikit-learn's NaN traceback)."""
    case = Case(tmp_path, train={"phases": [{"epochs": 3, "lr": 1e9}], "batch_size": 16, "optimizer": "sgd"})
    case.folds()
    capsys.readouterr()
    assert main(train_cmd(case, "--fold", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and "lower the phase's lr" in err[0]
    assert not (case.run / "fold0" / "oof.csv").exists() and not list(tmp_path.rglob("*.tmp"))
    best = case.run / "fold0" / "best.pt"
    if best.exists():  # an epoch before the divergence was kept: it must still load, and be finite
        state = torch.load(best, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_held_lock_refuses_a_second_run(tmp_path, capsys):
    """Another process trains the experiment: refused before anything is written, stamp included."""
    case = Case(tmp_path)
    case.folds()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        digest = stamp_path(load_config(case.config), "train").stem
        other = {"pid": sleeper.pid, "host": socket.gethostname(), "stage": "train", "fold": None, "digest": digest}
        (case.run / "locks").mkdir(parents=True)
        (case.run / "locks" / f"{socket.gethostname()}-{sleeper.pid}.json").write_text(json.dumps(other))
        before = snapshot(case.tmp)
        capsys.readouterr()
        assert main(train_cmd(case, "--fold", "1")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"locked: pid {sleeper.pid}" in err[0] and "is running train" in err[0]
        assert snapshot(case.tmp) == before
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["folds", "nowhere.yaml"], "nowhere.yaml"),
        (["ensemble", "runs/never-made"], "runs/never-made"),
    ],
)
def test_as_a_real_process(tmp_path, argv, fragment):
    """The interpreter's own exit code and stderr: one line, no traceback."""
    res = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, capture_output=True, text=True)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- a number


class NumberCase(Case):
    """make_numbers' competition (a score per image; grades 0..3 when ordinal), tmp/tiny.yaml."""

    def __init__(self, tmp: Path, task: str = "regression", **sections):
        from helpers import make_numbers, number_config

        self.tmp, self.comp = tmp, make_numbers(tmp / "comp", ordinal=task == "ordinal")
        self.config = number_config(tmp, self.comp, name="tiny", task=task, **sections)
        self.run = tmp / "runs" / "tiny"


def relabel(line: int, value: str):
    """Set train.csv's line `line` (the header is line 1) to `value`."""
    return lambda c: c.edit_csv("train.csv", lambda d: d.assign(score=d.score.where(d.index != line - 2, value)))


NUMBER_CSV_CASES = {
    "text target": ("regression", relabel(7, "high"), ["train.csv: line 7: 'score' = 'high' is not a number"]),
    "empty target": ("regression", relabel(4, ""), ["train.csv: line 4: empty 'score'"]),
    "infinite target": ("regression", relabel(5, "inf"), ["line 5: 'score' = 'inf' is not a number"]),
    "named grade": ("ordinal", relabel(3, "severe"), ["line 3: 'score' = 'severe' is not an ordered grade"]),
    "a grade too rare for the folds": (
        "ordinal",
        relabel(2, "7"),
        ["grade '7' has 1 rows, fewer than folds.n_folds=2"],
    ),
}


@pytest.mark.parametrize("name", NUMBER_CSV_CASES)
def test_a_target_that_is_not_a_number_names_its_line(tmp_path, capsys, name):
    task, spoil, fragments = NUMBER_CSV_CASES[name]
    case = NumberCase(tmp_path, task)
    spoil(case)
    expect_error(case, ["folds", str(case.config)], capsys, *fragments)
    assert not (tmp_path / "folds" / "comp.csv").exists()


def test_a_y_range_that_leaves_out_training_targets_stops_before_the_first_epoch(tmp_path, capsys):
    case = NumberCase(tmp_path, model={"y_range": [0.0, 5.0]})
    case.folds()
    expect_error(case, train_cmd(case), capsys, "model.y_range: [0.0, 5.0] leaves out training targets", "0 to 10")
    assert not (case.run / "fold0").exists()


NUMBER_SAMPLE_CASES = {
    "class columns": (lambda d: d.assign(low=0.5, high=0.5), "a number per id needs 'image_id' then one column"),
    "text": (lambda d: d.assign(score="cat"), "line 2: 'score' = 'cat' is text; this sample cannot take a number"),
}


@pytest.mark.parametrize("name", NUMBER_SAMPLE_CASES)
def test_a_sample_that_cannot_take_a_number_stops_training_before_the_first_epoch(tmp_path, capsys, name):
    case = NumberCase(tmp_path)
    case.folds()
    spoil, fragment = NUMBER_SAMPLE_CASES[name]
    case.edit_csv("sample_submission.csv", spoil)
    expect_error(case, train_cmd(case), capsys, "sample_submission.csv", fragment)
    assert not (case.run / "fold0").exists()


NUMBER_CONFIG_CASES = {
    "label smoothing": (["train.label_smoothing=0.1"], "train.label_smoothing: smooths class targets"),
    "class weights": (["train.class_weights=balanced"], "train.class_weights: weights classes"),
    "calibration": (["infer.calibrate='on'"], "infer.calibrate: scales probabilities"),
    "a probabilities' merge": (["infer.tta.merge=gmean"], "infer.tta.merge: merges probabilities; mean or median"),
    "accuracy monitored": (["train.monitor=accuracy"], "train.monitor: accuracy has no meaning"),
    "a class loss": (["train.loss=focal"], "train.loss: focal is for classes"),
    "bce without a range": (["train.loss=bce", "model.y_range=null"], "train.loss: bce needs model.y_range"),
    "a class metric": (["metric=accuracy"], "metric: accuracy does not score a number"),
    "kappa of a regression": (["metric=qwk"], "metric: qwk does not score a number (data.task regression)"),
    "a negative class": (["data.negative_class=low"], "data.negative_class: names a class"),
    "hard negatives": (["train.hard_negatives_from=x.yaml"], "train.hard_negatives_from: mines a class's negatives"),
}


@pytest.mark.parametrize("name", NUMBER_CONFIG_CASES)
def test_what_means_nothing_for_a_number_is_refused_naming_the_key(tmp_path, capsys, name):
    case = NumberCase(tmp_path)
    case.folds()
    overrides, fragment = NUMBER_CONFIG_CASES[name]
    expect_error(case, train_cmd(case, *overrides), capsys, fragment)
    assert not (case.run / "fold0").exists()


def test_mining_a_number_and_voting_on_one_are_refused(numbers, capsys, tmp_path):
    tmp, comp, cfg, _ = numbers["regression"]
    case = Case.__new__(Case)
    case.tmp, case.comp, case.run, case.config = tmp, comp, cfg.run_dir, tmp / "regression.yaml"
    expect_error(case, ["mine", str(case.config)], capsys, "mine: works on one label per image", "regression")
    vote = ["ensemble", str(cfg.run_dir), "--method", "vote", "--out-dir", str(tmp_path)]
    expect_error(case, vote, capsys, "ensemble method vote: a number takes mean, fit, rank, median")
    ordinal_run = numbers["ordinal"][2].run_dir
    mixed = ["ensemble", str(cfg.run_dir), str(ordinal_run), "--out-dir", str(tmp_path)]
    expect_error(case, mixed, capsys, "data.task ordinal, but", "is regression; cannot ensemble them")
    calibrated = ["ensemble", str(cfg.run_dir), "--calibrate", "on", "--out-dir", str(tmp_path)]
    expect_error(case, calibrated, capsys, "ensemble calibrate: on scales probabilities")
    assert not list(tmp_path.glob("*.csv"))
