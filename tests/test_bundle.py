"""make bundle and a bundle's predict.py: packed from finished runs, installed with pip --no-index
into an environment that has only what the target image is declared to have, and predicting
exactly the submission make ensemble wrote."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from helpers import ROOT, image_env, make, make_competition, make_config, outside, run_chain

from pipeline.__main__ import main as cli
from pipeline.__main__ import parse
from pipeline.bundles import PROJECT, BundleDir, unpack
from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.stages import bundle, ensemble
from pipeline.stages.bundle import closure, needed_wheels, read_target

KAGGLE = ROOT / "configs" / "bundle-target-kaggle.txt"


def test_the_wheels_are_the_projects_dependencies_the_target_lacks():
    everything = needed_wheels(["torch", "timm"])
    names = {w.split("==")[0].lower().replace("_", "-") for w in everything}
    assert {"albumentations", "pandas", "scikit-learn", "pydantic"} <= names
    assert not names & set(closure(["torch", "timm"]))  # nor what torch and timm bring (numpy, pyyaml...)
    kaggle = needed_wheels(read_target(KAGGLE))
    assert "pandas" not in {w.split("==")[0] for w in kaggle} and set(kaggle) < set(everything)
    assert all(w.count("==") == 1 for w in everything)  # pinned to the version installed here


def snapshot(*folders) -> dict:
    """Every file and folder under these, with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in [f, *f.rglob("*")]}


@pytest.fixture(scope="module")
def ensembled(tmp_path_factory):
    """A two-member ensemble (fitted weights, a log-loss metric: both calibrations) of a
    competition whose submission holds probabilities: the members run here, the ensemble and the
    bundle made through Make."""
    tmp = tmp_path_factory.mktemp("bundle")
    comp = make_competition(tmp / "comp", n_train=24, n_test=9)
    sample = pd.read_csv(comp / "sample_submission.csv")[["image_id"]].assign(ants=0.5, bees=0.5)
    sample.to_csv(comp / "sample_submission.csv", index=False)
    one = {"phases": [{"epochs": 1, "lr": 3e-3}], "batch_size": 8}
    a = make_config(tmp, comp, "a", metric="log_loss", train=one, infer={"batch_size": 16, "tta": {"flips": ["hflip"]}})
    b = make_config(tmp, comp, "b", metric="log_loss", train={**one, "seed": 3}, infer={"batch_size": 4})
    runs = [run_chain(load_config(c)).run_dir for c in (a, b)]
    spec = tmp / "ab.yaml"
    spec.write_text(f"name: ab\nmembers: [{runs[0]}, {runs[1]}]\nmethod: fit\nout_dir: {tmp / 'subs'}\n")
    made = make("bundle", f"ENSEMBLE={spec}", f"TARGET={KAGGLE}", f"BUNDLES={tmp / 'bundles'}")
    return tmp, comp, spec, made.stdout


def test_make_bundle_packs_the_members_the_rule_and_the_wheels(ensembled):
    tmp, _, spec, out = ensembled
    assert "pipeline ensemble" in out and "pipeline bundle" in out  # the submission first
    bundle = BundleDir(tmp / "bundles" / "ab")
    doc = json.loads(bundle.spec.read_text())
    assert doc["members"] == ["a", "b"] and doc["method"] == "fit" and doc["project"] == PROJECT
    assert "+g" in doc["version"]  # a digest of the code: pip never keeps another 0.1.0 in its place
    for name in ("a", "b"):
        m = bundle.member(name)
        assert all(p.is_file() for p in (m.config, m.oof, m.calibration, m.best(0), m.best(1)))
        assert not m.test.exists()  # predictions are made where the bundle runs
    wheels = sorted(p.name for p in bundle.wheels.glob("*.whl"))
    assert wheels == doc["wheels"] and f"kaggle_image_pipeline-{doc['version']}-py3-none-any.whl" in wheels
    assert any(w.startswith("albumentations-") for w in wheels) and not any(w.startswith("torch") for w in wheels)
    assert not list(bundle.root.parent.glob(".*tmp*"))  # nothing half-written beside it
    assert (bundle.root / "target" / KAGGLE.name).read_text() == KAGGLE.read_text()
    args = [f"ENSEMBLE={spec}", f"BUNDLES={tmp / 'bundles'}"]
    assert "pipeline" not in make("bundle", *args, f"TARGET={KAGGLE}").stdout  # up to date
    plan = make("-n", "bundle", *args, f"TARGET={ROOT / 'configs' / 'bundle-target.txt'}").stdout
    assert "pipeline bundle" in plan and "pipeline ensemble" not in plan  # another target: packed again


def test_the_bundle_predicts_offline_exactly_the_ensembles_submission(ensembled, tmp_path):
    tmp, comp, _, _ = ensembled
    where = tmp_path / "kaggle"  # a fresh folder outside the repository: the bundle as uploaded
    shutil.copytree(tmp / "bundles" / "ab", where / "input" / "ab")
    python = image_env(tmp_path, read_target(KAGGLE))
    check = "import torch, timm, pandas\ntry:\n import pipeline\nexcept ImportError: print('absent')"
    assert outside(python, "-c", check, cwd=where).stdout.strip() == "absent"
    out = where / "working" / "submission.csv"  # where Kaggle takes it from: predict.py's default
    out.parent.mkdir()
    inputs = snapshot(where / "input", comp)  # read-only on Kaggle: nothing may be written there
    done = outside(python, where / "input" / "ab" / "predict.py", comp, cwd=where / "working")
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes() == (tmp / "subs" / "ab.csv").read_bytes()
    assert snapshot(where / "input", comp) == inputs and sorted(out.parent.iterdir()) == [out]
    assert "absent" not in outside(python, "-c", check, cwd=where).stdout  # installed from the bundle


def test_predict_names_a_missing_folder_or_bundle_in_one_line(ensembled, tmp_path, capsys, monkeypatch):
    tmp, comp, _, _ = ensembled
    monkeypatch.chdir(tmp_path)
    assert cli(["predict", str(tmp / "bundles" / "ab"), str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such folder (give the competition's folder)\n"
    assert cli(["predict", str(comp), str(comp)]) == 2
    assert capsys.readouterr().err == f"error: {comp / 'bundle.json'}: not found ({comp} is not a bundle)\n"
    assert not list(tmp_path.iterdir())  # no submission, no work folder left


def test_bad_names_targets_and_rules_are_refused_before_anything_is_written(ensembled, tmp_path):
    tmp, _, _, _ = ensembled
    runs = [tmp / "runs" / "a", tmp / "runs" / "b"]
    (tmp_path / "keep").mkdir()
    for name, message in [("..", "not starting with '.'"), ("keep", "exists and is not a bundle")]:
        with pytest.raises(PipelineError, match=message):
            bundle.main(runs, name, out_dir=tmp_path, target=KAGGLE)
    with pytest.raises(PipelineError, match="metric log_loss needs probabilities"):
        bundle.main(runs, "v", method="vote", out_dir=tmp_path, target=KAGGLE)
    bad = tmp_path / "target.txt"
    bad.write_text("torch==2.14.1  # a version is allowed\ntimm[extra]\nnot a name!\n")
    with pytest.raises(PipelineError, match=f"{bad} line 3: 'not a name!' is not a package name"):
        read_target(bad)
    bad.write_text("torch==2.14.1\ntimm[extra]\n")
    assert read_target(bad) == ["torch", "timm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "target.txt"]


def test_predict_takes_overrides_after_its_options_and_a_reused_work_folder_is_cleared(ensembled, tmp_path):
    tmp, comp, _, _ = ensembled
    args = parse(["predict", "B", "C", "--out", "x.csv", "runtime.device=cpu", "infer.batch_size=2"])
    assert args.overrides == ["runtime.device=cpu", "infer.batch_size=2"] and args.out == "x.csv"
    work = tmp_path / "work"
    stale = work / "runs" / "a" / "calibration.json"  # another bundle's member of the same name
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    _, cfgs = unpack(BundleDir(tmp / "bundles" / "ab"), comp, work, ["infer.batch_size=2"])
    assert cfgs[0].infer.batch_size == 2 and str(cfgs[0].data.root) == str(comp.resolve())
    assert stale.resolve() == (tmp / "bundles" / "ab" / "members" / "a" / "calibration.json").resolve()


def test_a_multilabel_bundle_predicts_the_ensembles_submission_with_its_thresholds(multilabel, tmp_path, monkeypatch):
    _, comp, cfg = multilabel
    made = ensemble.main([cfg.run_dir], "ml", tmp_path / "subs")  # per-label thresholds tuned on the OOF
    assert made.shape[0] == len(pd.read_csv(comp / "sample_submission.csv"))
    target = tmp_path / "target.txt"
    target.write_text(f"{PROJECT}  # an image that has every dependency: only the project's wheel travels\n")
    root = bundle.main([cfg.run_dir], out_dir=tmp_path / "bundles", target=target)
    wheels = json.loads(BundleDir(root).spec.read_text())["wheels"]
    assert len(wheels) == 1 and wheels[0].startswith("kaggle_image_pipeline-")
    monkeypatch.chdir(tmp_path)
    assert cli(["predict", str(root), str(comp), "--out", "sub.csv"]) == 0
    assert (tmp_path / "sub.csv").read_bytes() == (tmp_path / "subs" / "ml.csv").read_bytes()
    assert made.iloc[:, 1].str.contains(" ").any()  # some image has two labels: the thresholds matter


@pytest.mark.parametrize("task", ["regression", "ordinal"])
def test_a_numbers_bundle_predicts_make_ensembles_submission_byte_for_byte(numbers, task, tmp_path, monkeypatch):
    tmp, comp, cfg, _ = numbers[task]
    target = tmp_path / "target.txt"
    target.write_text(f"{PROJECT}\n")  # an image with every dependency: only the project's wheel travels
    root = bundle.main([cfg.run_dir], out_dir=tmp_path / "bundles", target=target)
    wheels = json.loads(BundleDir(root).spec.read_text())["wheels"]
    assert len(wheels) == 1 and wheels[0].startswith("kaggle_image_pipeline-")
    monkeypatch.chdir(tmp_path)
    assert cli(["predict", str(root), str(comp), "--out", "sub.csv"]) == 0
    assert (tmp_path / "sub.csv").read_bytes() == (tmp / "subs" / f"{task}.csv").read_bytes()  # make ensemble's
