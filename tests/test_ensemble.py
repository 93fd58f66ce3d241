"""pipeline/stages/ensemble.py: members combined by every method, the table, the JSON, and the
submission in the sample's layout; members that cannot be combined are refused."""

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import COLOURS, embedded_images, fake_run, make_competition, probs

from pipeline.config_files import to_yaml
from pipeline.errors import PipelineError
from pipeline.stages import ensemble
from pipeline.upstream import read_predictions


def test_mean_of_members_gives_labels_in_sample_order(tmp_path, comp):
    n_test, n_train = 10, 32
    a = fake_run(tmp_path, comp, "a", probs(n_test, np.linspace(0, 1, n_test)), probs(n_train, 0.9))
    b = fake_run(tmp_path, comp, "b", probs(n_test, 0.45), probs(n_train, 0.1))
    sub = ensemble.main([a, b], name="ab", out_dir=tmp_path / "subs")
    written = pd.read_csv(tmp_path / "subs" / "ab.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(written.columns) == list(sample.columns)
    assert written.image_id.tolist() == sample.image_id.tolist()
    mean_first = (np.linspace(0, 1, n_test) + 0.45) / 2
    assert written.label.tolist() == np.where(mean_first > 0.5, "ants", "bees").tolist()
    assert sub.equals(written)


def test_probability_format_follows_sample_columns(tmp_path, comp):
    sample = pd.read_csv(comp / "sample_submission.csv")
    pd.DataFrame({"image_id": sample.image_id, "bees": 0.5, "ants": 0.5}).to_csv(
        comp / "sample_submission.csv", index=False
    )
    run = fake_run(tmp_path, comp, "a", probs(10, 0.8), probs(32, 0.5))
    sub = ensemble.main([run], out_dir=tmp_path / "subs")
    assert list(sub.columns) == ["image_id", "bees", "ants"]
    assert np.allclose(sub.ants, 0.8) and np.allclose(sub.bees, 0.2)
    assert (tmp_path / "subs" / "a.csv").is_file()


def test_an_unknown_method_is_a_one_line_error(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    with pytest.raises(PipelineError, match="ensemble method median: it takes mean, fit, rank, vote, hierarchical"):
        ensemble.main([a], out_dir=tmp_path / "subs", method="median")
    assert not (tmp_path / "subs").exists()


def test_incompatible_members_refused(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    b = fake_run(tmp_path, comp, "b", np.full((10, 2), 0.5), np.full((32, 2), 0.5), ["ants", "wasps"])
    with pytest.raises(PipelineError, match="classes differ"):
        ensemble.main([a, b], out_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


def test_spec_file_table_and_json(tmp_path, comp, capsys):
    y_first = (pd.read_csv(comp / "train.csv").label == "ants").to_numpy()
    right = np.where(y_first, 0.8, 0.3)  # member a: right on every image
    a = fake_run(tmp_path, comp, "a", probs(10, 0.7), probs(32, right))
    b = fake_run(tmp_path, comp, "b", probs(10, 0.4), probs(32, 0.5))
    spec = tmp_path / "ab.yaml"
    spec.write_text(f"name: ab\nmembers: [{a}, {b}]\nmethod: fit\nout_dir: {tmp_path / 'subs'}\n")
    ensemble.run_cli(SimpleNamespace(spec=str(spec), runs=[]))
    out = capsys.readouterr().out
    for row in (
        "a",
        "b",
        "ensemble: mean",
        "ensemble: fit",
        "ensemble: fit (in-sample)",
        "ensemble: rank",
        "ensemble: vote",
        "ensemble: hierarchical",
    ):
        assert row in out
    meta = json.loads((tmp_path / "subs" / "ab.json").read_text())
    assert meta["method"] == "fit" and meta["metric"] == "accuracy" and len(meta["members"]) == 2
    assert min(meta["weights"]) >= 0 and sum(meta["weights"]) == pytest.approx(1)
    assert meta["cv"]["ensemble: fit"] >= meta["cv"]["ensemble: mean"]
    assert meta["cv"]["ensemble: fit"] >= max(meta["cv"]["a"], meta["cv"]["b"])
    assert "fitted ones cross-fitted" in out and "ensemble: fit (in-sample)" in meta["cv"]
    assert (tmp_path / "subs" / "ab.csv").is_file()
    page = (tmp_path / "subs" / "ab.html").read_text()  # the ensemble report: members, weights, correlation
    (corr,) = embedded_images(page)
    assert np.asarray(corr.convert("L")).std() > 1
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td>[\w_]+</td>\s*<td>([\d.]+)</td>", page)
    assert [r[0] for r in rows] == ["a", "b"]  # the members table, with each member's weight
    assert [float(r[1]) for r in rows] == pytest.approx(meta["weights"], abs=1e-4)


def test_a_mean_f_beta_per_image_is_refused_for_one_label_per_image(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    with pytest.raises(PipelineError, match="ensemble metric f2_samples: the mean F-beta per image of several labels"):
        ensemble.main([a], out_dir=tmp_path / "subs", metric="f2_samples")
    assert not (tmp_path / "subs").exists()


def test_members_on_other_folds_are_refused(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    b = fake_run(tmp_path, comp, "b", probs(10, 0.5), probs(32, 0.5))
    oof = pd.read_csv(b / "oof.csv")
    oof.assign(fold=1 - oof.fold).to_csv(b / "oof.csv", index=False)
    with pytest.raises(PipelineError, match="OOF ids/folds differ"):
        ensemble.main([a, b], out_dir=tmp_path / "subs")


def test_ensemble_writes_space_separated_labels_with_tuned_thresholds(multilabel, tmp_path, capsys):
    _, comp, cfg = multilabel
    sub = ensemble.main([cfg.run_dir, cfg.run_dir], name="ml2", out_dir=tmp_path / "subs", method="fit")
    sample = pd.read_csv(comp / "sample_submission.csv")
    written = pd.read_csv(tmp_path / "subs" / "ml2.csv", keep_default_na=False)
    assert list(written.columns) == ["image_id", "tags"] and written.image_id.tolist() == sample.image_id.tolist()
    assert all(set(v.split()) <= set(COLOURS) for v in written.tags)
    meta = json.loads((tmp_path / "subs" / "ml2.json").read_text())
    assert set(meta["thresholds"]) == set(COLOURS) and meta["metric"] == "f1_macro"
    test = pd.read_csv(cfg.run_dir / "test.csv").set_index("image_id").loc[sample.image_id, COLOURS]
    cut = np.array(list(meta["thresholds"].values()))
    nearest = [COLOURS[int(np.argmax(row.to_numpy() - cut))] for _, row in test.iterrows()]  # when none passes
    want = [
        " ".join(c for c, t in zip(COLOURS, cut) if row[c] >= t) or first
        for (_, row), first in zip(test.iterrows(), nearest)
    ]
    assert written.tags.tolist() == want == sub.tags.tolist() and all(want)  # every train image has a label
    assert meta["thresholds_way"] in ("0.5", "global", "per label") and meta["empty_labels"] is False
    assert "multi-label thresholds for f1_macro, cross-fitted CV by way: 0.5" in capsys.readouterr().out
    assert "ensemble: fit at its thresholds (f1_macro, in-sample)" in meta["cv"]
    with pytest.raises(PipelineError, match="a multi-label task takes mean, fit, rank"):
        ensemble.main([cfg.run_dir], out_dir=tmp_path / "subs", method="vote")


def test_ensemble_writes_one_probability_column_per_label(multilabel, tmp_path):
    _, comp, cfg = multilabel
    sample = pd.read_csv(comp / "sample_submission.csv")
    probs_sample = pd.DataFrame({"image_id": sample.image_id, "red": 0.5, "green": 0.5, "blue": 0.5})
    probs_sample.to_csv(comp / "sample_probs.csv", index=False)  # a file of its own: the fixture's stays
    run = tmp_path / "runs" / "mlp"
    shutil.copytree(cfg.run_dir, run)
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sample_submission": "sample_probs.csv"})})
    (run / "config.yaml").write_text(to_yaml(other))
    sub = ensemble.main([run], name="mlp", out_dir=tmp_path / "subs")
    test = pd.read_csv(cfg.run_dir / "test.csv").set_index("image_id")
    assert list(sub.columns) == ["image_id", "red", "green", "blue"]
    assert np.allclose(sub[["red", "green", "blue"]], test.loc[sample.image_id, ["red", "green", "blue"]])


def _integer_run(tmp_path, classes):
    """A faked run on a competition whose classes are integers; test row i's likeliest class is
    classes[i % K]."""
    comp = make_competition(tmp_path / "comp", classes=tuple(classes))
    k, eye = len(classes), np.eye(len(classes)) * 0.9 + 0.1 / len(classes)
    run = fake_run(tmp_path, comp, "ints", eye[np.arange(10) % k], eye[np.arange(32) % k], classes)
    return comp, run, [classes[i % k] for i in range(10)]


@pytest.mark.parametrize(
    "classes", [[str(i) for i in range(1, 6)], [str(i) for i in range(10)], sorted(str(i) for i in range(11))]
)
def test_integer_classes_reach_the_submission_as_themselves(tmp_path, classes):
    _, run, top = _integer_run(tmp_path, classes)  # the sample holds the first class: labels
    ensemble.main([run], out_dir=tmp_path / "subs")
    assert pd.read_csv(tmp_path / "subs" / "ints.csv").label.tolist() == [int(t) for t in top]


def test_integer_classes_and_a_sample_of_zeros_wait_for_data_submission_classes(tmp_path):
    comp, run, top = _integer_run(tmp_path, [str(i) for i in range(1, 6)])
    sample = pd.read_csv(comp / "sample_submission.csv")
    sample.assign(label=0).to_csv(comp / "sample_submission.csv", index=False)
    with pytest.raises(PipelineError, match="sample_submission.csv: 'label' holds integers in 0..4 .*data.submission"):
        ensemble.main([run], out_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists()
    for form, want in (("codes", [int(t) - 1 for t in top]), ("labels", [int(t) for t in top])):
        cfg = read_predictions(run).cfg
        (run / "config.yaml").write_text(
            to_yaml(cfg.model_copy(update={"data": cfg.data.model_copy(update={"submission_classes": form})}))
        )
        ensemble.main([run], out_dir=tmp_path / "subs")
        assert pd.read_csv(tmp_path / "subs" / "ints.csv").label.tolist() == want
