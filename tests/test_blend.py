"""Ensemble methods, metrics and submission formats on hand-made arrays with known answers."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline import blend, ensemble, metrics
from pipeline.errors import PipelineError
from test_ensemble import fake_run, probs


def test_weighted_mean():
    stack = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert np.allclose(blend.weighted_mean(stack), [[0.5, 0.5]])
    assert np.allclose(blend.weighted_mean(stack, [3, 1]), [[0.75, 0.25]])


def test_rank_mean_uses_only_the_order():
    a = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.51, 0.49], [0.50, 0.50], [0.49, 0.51]])  # same order, other calibration
    out = blend.rank_mean(np.stack([a, b]))
    assert np.allclose(out, blend.rank_mean(np.stack([a, a])))
    assert out.argmax(1).tolist() == [0, 0, 1] and np.allclose(out.sum(1), 1)


def test_vote_majority_and_ties_broken_the_same_way_every_time():
    labels = np.array([[0, 1, 2, 0], [0, 1, 1, 1], [2, 0, 2, 2]])  # 3 voters, 4 images
    tie = np.full((4, 3), 1 / 3)
    out = blend.vote(labels, 3, tie)
    assert out.argmax(1).tolist() == [0, 1, 2, 0]  # the last is a three-way tie: lowest index
    assert np.allclose(out.sum(1), 1) and np.allclose(out[0], [2 / 3, 0, 1 / 3], atol=1e-6)
    two = np.array([[0, 1], [1, 0]])  # two voters disagree on both images
    prefer = np.array([[0.4, 0.6], [0.7, 0.3]])
    assert blend.vote(two, 2, prefer).argmax(1).tolist() == [1, 0]  # the tie goes to the likelier class
    for _ in range(3):
        assert blend.vote(two, 2, np.full((2, 2), 0.5)).argmax(1).tolist() == [0, 0]
    strong = np.array([[0.0, 1.0]] * 1)
    assert blend.vote(np.array([[0], [0], [1]]), 2, strong).argmax(1).tolist() == [0]  # never overturns


def test_fitted_weights_are_a_guarded_simplex():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.where(y[:, None] == np.arange(2), 0.8, 0.2)
    noise = rng.dirichlet([1, 1], 200)
    oofs = np.stack([good, noise, 0.5 * good + 0.5 * noise])
    for metric in ("log_loss", "accuracy", "roc_auc"):
        w = blend.fit_weights(oofs, y, metric)
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
        fitted = metrics.score(metric, y, blend.weighted_mean(oofs, w))
        plain = metrics.score(metric, y, blend.weighted_mean(oofs))
        assert not metrics.better(metric, plain, fitted)
        for single in oofs:
            assert not metrics.better(metric, metrics.score(metric, y, single), fitted)
    assert blend.fit_weights(oofs, y, "log_loss")[1] < 0.05  # the noise member is dropped
    assert np.allclose(blend.fit_weights(oofs[:1], y, "accuracy"), [1.0])


def test_vote_and_hierarchical_on_folds():
    # one image; member A's three fold models say 0, 1, 1 (fold mean prefers 0); member B says 0
    a_folds = np.array([[[0.99, 0.01]], [[0.45, 0.55]], [[0.45, 0.55]]])
    b_folds = np.array([[[0.6, 0.4]]] * 3)
    tests = np.stack([a_folds.mean(0), b_folds.mean(0)])
    oofs = np.array([[[0.2, 0.8]], [[0.7, 0.3]]])
    y = np.array([0])
    _, flat, _ = blend.combine("vote", oofs, tests, [a_folds, b_folds], y, "accuracy")
    _, hier, _ = blend.combine("hierarchical", oofs, tests, [a_folds, b_folds], y, "accuracy")
    assert flat.argmax(1).tolist() == [0] and np.allclose(flat, [[4 / 6, 2 / 6]], atol=1e-6)
    assert hier.argmax(1).tolist() == [0] and np.allclose(hier, [[1.0, 0.0]], atol=1e-6)
    oof_h, _, _ = blend.combine("hierarchical", oofs, tests, [a_folds, b_folds], y, "accuracy")
    assert np.allclose(oof_h, blend.vote(oofs.argmax(2), 2, oofs.mean(0)))  # the same rule on OOF


@pytest.mark.parametrize("metric, y, p, want", [
    ("accuracy", [0, 1, 1], [[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], 2 / 3),
    ("log_loss", [0, 1], [[0.5, 0.5], [0.5, 0.5]], np.log(2)),
    ("roc_auc", [0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], 0.75),
    ("f1_macro", [0, 0, 1, 1], [[1, 0], [1, 0], [1, 0], [0, 1]], (0.8 + 2 / 3) / 2),
    ("qwk", [0, 1, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 1.0),
])
def test_metrics_on_known_values(metric, y, p, want):
    assert metrics.score(metric, np.array(y), np.array(p, dtype=float)) == pytest.approx(want)


def test_metric_per_fold_and_overall():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.2, 0.8]])
    out = metrics.per_fold("accuracy", y, p, np.array([0, 0, 1, 1]))
    assert out == {"fold0": 1.0, "fold1": 0.5, "overall": 0.75}


def test_roc_auc_macro_for_three_classes():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.7 + 0.1
    assert metrics.roc_auc(y, p) == pytest.approx(1.0)


# ---------------------------------------------------------------- submission formats

TEST = pd.DataFrame({"image_id": ["x", "y", "z"], "ants": [0.9, 0.2, 0.6], "bees": [0.1, 0.8, 0.4]})
CLASSES = ["ants", "bees"]


@pytest.mark.parametrize("sample_values, column, want", [
    ({"label": ["ants"] * 3}, "label", ["ants", "bees", "ants"]),           # class names
    ({"label": [0] * 3}, "label", [0, 1, 0]),                                 # integer codes
    ({"ants": [0.5] * 3, "bees": [0.5] * 3}, "bees", [0.1, 0.8, 0.4]),       # one column per class
    ({"bees": [0.5] * 3}, "bees", [0.1, 0.8, 0.4]),                           # binary, named class
    ({"target": [0.5] * 3}, "target", [0.1, 0.8, 0.4]),                       # binary: second class
])
def test_each_format_round_trips_against_its_sample(tmp_path, sample_values, column, want):
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], **sample_values})
    sub = ensemble.build_submission(sample, TEST, CLASSES, "image_id", "s.csv")
    ensemble.check_submission(sub, sample, CLASSES, "image_id", "s.csv")
    sub.to_csv(tmp_path / "s.csv", index=False)
    back = pd.read_csv(tmp_path / "s.csv")
    assert list(back.columns) == list(sample.columns) and back.image_id.tolist() == ["x", "y", "z"]
    got = back[column].tolist()
    assert got == want if isinstance(want[0], (str, int)) else np.allclose(got, want)
    ensemble.check_submission(back, sample, CLASSES, "image_id", "s.csv")


def test_binary_column_is_the_class_that_is_not_negative():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "target": [0.5] * 3})
    sub = ensemble.build_submission(sample, TEST, CLASSES, "image_id", "s.csv", negative="bees")
    assert np.allclose(sub.target, TEST.ants)


@pytest.mark.parametrize("break_it, message", [
    (lambda s: s.iloc[[0, 2]], "no prediction for id 'y'"),
])
def test_build_refuses_missing_id(break_it, message):
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["ants"] * 3})
    with pytest.raises(PipelineError, match=message):
        ensemble.build_submission(sample, break_it(TEST), CLASSES, "image_id", "s.csv")


def test_codes_and_binary_values_are_checked():
    codes = pd.DataFrame({"image_id": ["x"], "label": [0]})
    with pytest.raises(PipelineError, match="'label' = '2' is not a valid code"):
        ensemble.check_submission(codes.assign(label=[2]), codes, CLASSES, "image_id", "s.csv")
    binary = pd.DataFrame({"image_id": ["x"], "target": [0.5]})
    with pytest.raises(PipelineError, match="'target' = '1.2' is not a valid probability"):
        ensemble.check_submission(binary.assign(target=[1.2]), binary, CLASSES, "image_id", "s.csv")


# ---------------------------------------------------------------- the stage

def test_spec_file_table_and_json(tmp_path, comp, capsys):
    y_first = (pd.read_csv(comp / "train.csv").label == "ants").to_numpy()
    right = np.where(y_first, 0.8, 0.3)  # member a: right on every image
    a = fake_run(tmp_path, comp, "a", probs(10, 0.7), probs(32, right))
    b = fake_run(tmp_path, comp, "b", probs(10, 0.4), probs(32, 0.5))
    spec = tmp_path / "ab.yaml"
    spec.write_text(f"name: ab\nmembers: [{a}, {b}]\nmethod: fit\nout_dir: {tmp_path / 'subs'}\n")
    ensemble.run_cli(type("A", (), {"spec": str(spec), "runs": []})())
    out = capsys.readouterr().out
    for row in ("a", "b", "ensemble: mean", "ensemble: fit", "ensemble: rank", "ensemble: vote",
                "ensemble: hierarchical"):
        assert row in out
    meta = json.loads((tmp_path / "subs" / "ab.json").read_text())
    assert meta["method"] == "fit" and meta["metric"] == "accuracy" and len(meta["members"]) == 2
    assert min(meta["weights"]) >= 0 and sum(meta["weights"]) == pytest.approx(1)
    assert meta["cv"]["ensemble: fit"] >= meta["cv"]["ensemble: mean"]
    assert meta["cv"]["ensemble: fit"] >= max(meta["cv"]["a"], meta["cv"]["b"])
    assert (tmp_path / "subs" / "ab.csv").is_file()


@pytest.mark.parametrize("text, message", [
    ("name: x\nmembers: [a]\nmethod: median\n", "method"),
    ("name: x\nmembers: [a]\nmethods: mean\n", "methods: Extra inputs"),
    ("name: x\nmembers: [a, b]\nweights: [1]\n", "one non-negative weight per member"),
    ("name: x\nmembers: [a, b]\nmethod: fit\nweights: [1, 1]\n", "only method mean"),
])
def test_bad_spec_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        ensemble.load_spec(path)


def test_members_on_other_folds_are_refused(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    b = fake_run(tmp_path, comp, "b", probs(10, 0.5), probs(32, 0.5))
    oof = pd.read_csv(b / "oof.csv")
    oof.assign(fold=1 - oof.fold).to_csv(b / "oof.csv", index=False)
    with pytest.raises(PipelineError, match="OOF ids/folds differ"):
        ensemble.main([a, b], out_dir=tmp_path / "subs")
