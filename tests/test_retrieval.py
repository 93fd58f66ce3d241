"""A retrieval task's predictions (pipeline/retrieval.py) on hand-made tables, and the identification
chain end to end: folds, an ArcFace head trained, embeddings searched, k guesses submitted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline import retrieval
from pipeline.errors import PipelineError
from pipeline.metrics import score
from pipeline.runs import RunDir
from pipeline.stages import ensemble, folds, infer

A = retrieval.ABSENT
NEW = retrieval.NEW


def test_similarities_are_each_individuals_best_cosine_and_absent_without_a_gallery_image():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(7, 5))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = rng.normal(size=(3, 5))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 3, 3, 3, 1])
    got = retrieval.similarities(q, g, labels, 5)
    for c in range(5):
        want = (q @ g[labels == c].T).max(1) if (labels == c).any() else np.full(3, A)
        assert np.allclose(got[:, c], want, atol=1e-6)


def test_decode_puts_new_before_the_first_similarity_below_the_threshold():
    table = np.array([[0.9, 0.5, 0.2, A], [0.3, 0.8, 0.7, 0.1]])
    assert retrieval.decode(table, 3, None).tolist() == [[0, 1, 2], [1, 2, 0]]
    assert retrieval.decode(table, 3, 0.6).tolist() == [[0, NEW, 1], [1, 2, NEW]]
    assert retrieval.decode(table, 3, 0.95).tolist() == [[NEW, 0, 1], [NEW, 1, 2]]
    # an individual absent from the gallery is never guessed; NEW takes its place
    assert retrieval.decode(table, 4, 0.0).tolist() == [[0, 1, 2, NEW], [1, 2, 0, 3]]
    assert retrieval.spell(retrieval.decode(table, 4, 0.6), list("abcd"), "new") == ["a new b c", "b c new a"]
    assert retrieval.spell(np.array([[0, NEW, NEW]]), list("ab"), None) == ["a"]


def test_truth_is_new_where_the_gallery_holds_none_of_the_individual():
    table = np.array([[0.9, A], [0.2, A], [0.1, 0.4]])
    assert retrieval.truth(np.array([0, 1, 1]), table).tolist() == [0, NEW, 1]


def test_the_threshold_is_fitted_for_map_and_its_cv_cross_fitted():
    """Seen individuals match their own column well; new ones match nothing well: a threshold
    between the two answers new right, better than no new guess and than new alone."""
    rng = np.random.default_rng(1)
    n, c = 200, 20
    y = rng.integers(0, c, n)
    table = rng.uniform(0.0, 0.5, (n, c))
    new = rng.random(n) < 0.3
    table[~new, y[~new]] = rng.uniform(0.6, 1.0, (~new).sum())
    table[new, y[new]] = A  # an unseen individual has no gallery image
    folds = np.arange(n) % 4
    choice = retrieval.choose(y, table, folds, 5, True)
    assert 0.5 < choice.threshold <= table[~new, y[~new]].min()
    assert choice.cross_fitted > 0.95 > choice.without_new
    assert choice.new_everywhere == pytest.approx(new.mean())
    assert choice.in_sample >= choice.cross_fitted - 1e-9
    assert set(choice.per_fold) == {f"fold{k}" for k in range(4)}
    off = retrieval.choose(y, table, folds, 5, False)
    assert off.threshold is None and off.cross_fitted == off.without_new == score("map@5", np.where(new, -1, y), table)


def test_retrieval_folds_hold_out_a_share_of_the_rows_and_spread_the_rest():
    labels = np.repeat(np.arange(40), 4)  # 40 individuals, 4 images each
    f = folds.retrieval_folds(labels, None, 4, 0, 0.25)
    assert folds.held_out_share(labels, f) == pytest.approx(0.25, abs=0.03)
    spread = pd.Series(f).groupby(labels).nunique()
    assert set(spread) == {1, 4}  # wholly in one fold, or one image per fold
    assert np.array_equal(f, folds.retrieval_folds(labels, None, 4, 0, 0.25))  # the seed decides
    assert np.bincount(f).min() >= 35
    groups = np.repeat(np.arange(80), 2)  # two photos per session: a session never splits
    g = folds.retrieval_folds(labels, groups, 4, 0, 0.0)
    assert (pd.Series(g).groupby(groups).nunique() == 1).all()
    assert (pd.Series(g).groupby(labels).nunique() == 2).all()


# ----------------------------------------------------------------------------- the chain


def test_identification_end_to_end_beats_the_constant(identification, tmp_path, capsys):
    tmp, comp, cfg = identification
    run = RunDir(cfg.run_dir)
    oof, test = pd.read_csv(run.oof), pd.read_csv(run.test)
    classes = [c for c in test.columns if c != "image"]
    assert classes == sorted(pd.read_csv(comp / "train.csv")["whale"].unique())
    assert list(test["image"]) == list(pd.read_csv(comp / "sample_submission.csv")["image"])
    spec = json.loads(cfg.folds_file.with_suffix(".json").read_text())
    assert spec["task"] == "retrieval" and spec["individuals_held_out"] >= 0.25
    # an OOF row of an individual its fold never trained on holds ABSENT in that column
    held = oof.groupby("whale")["fold"].transform("nunique") == 1
    own = oof[classes].to_numpy()[np.arange(len(oof)), [classes.index(w) for w in oof["whale"]]]
    assert (own[held.to_numpy()] == A).all() and (own[~held.to_numpy()] > A).all()
    sub = ensemble.main([run.root], out_dir=tmp_path)
    out = capsys.readouterr().out
    assert "cross-fitted" in out and "(in-sample)" in json.loads((tmp_path / "ret.json").read_text())["cv"].__str__()
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub["image"]) == list(sample["image"])
    cells = sub["predictions"].str.split()
    assert cells.map(len).between(1, 5).all() and cells.map(lambda c: len(set(c)) == len(c)).all()
    truth = pd.read_csv(comp / "test_truth.csv").set_index("image")["whale"].loc[sub["image"]].to_numpy()
    ap = [1 / (c.index(t) + 1) if t in c[:5] else 0.0 for c, t in zip(cells, truth)]
    constant = float(np.mean(truth == "new_individual"))
    assert np.mean(ap) > constant + 0.2


def test_a_retrieval_ensemble_refuses_methods_that_read_probabilities(identification, tmp_path):
    _, _, cfg = identification
    with pytest.raises(PipelineError, match="mean or median"):
        ensemble.main([RunDir(cfg.run_dir).root], out_dir=tmp_path, method="vote")


def test_infer_refuses_a_model_trained_on_other_folds(identification, tmp_path):
    _, _, cfg = identification
    other = cfg.model_copy(update={"folds": cfg.folds.model_copy(update={"new_share": 0.5})})
    with pytest.raises(PipelineError, match="folds"):
        infer.main(other)


def test_a_test_only_run_searches_train_csv_as_the_gallery_and_predicts_the_same(identification, tmp_path):
    """What a bundle's notebook runs: no folds file at hand, the gallery read off train.csv."""
    _, _, cfg = identification
    run = RunDir(cfg.run_dir)
    shutil.copytree(run.root, tmp_path / "runs" / cfg.name)
    elsewhere = cfg.folds.model_copy(update={"dir": str(tmp_path / "no-folds")})
    other = cfg.model_copy(update={"runs_dir": str(tmp_path / "runs"), "folds": elsewhere})
    infer.main(other, test_only=True)
    again, before = pd.read_csv(RunDir(other.run_dir).test), pd.read_csv(run.test)
    assert list(again.columns) == list(before.columns)
    assert np.allclose(again.iloc[:, 1:].to_numpy(), before.iloc[:, 1:].to_numpy(), atol=1e-6)
