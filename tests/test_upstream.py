"""pipeline/upstream.py: another experiment's hard negatives and pseudo-labels join the training
of their own fold only, never a validation fold, and a doctored file is refused by its line."""

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import neg_config

from pipeline.competition import read_competition
from pipeline.errors import PipelineError
from pipeline.folds_file import training_rows
from pipeline.stages import mine, pseudo
from pipeline.training.fold import build
from pipeline.training.loaders import phase_loader, valid_loader
from pipeline.upstream import extra_rows

CLASSES = ["neg", "pos"]


def _trains_on_a_doctored(tmp, comp, what: str, table: pd.DataFrame):
    """An experiment training on a doctored file of another experiment's, made for this test."""
    doctored = neg_config(tmp, comp, name=f"doctored-{what}")
    doctored.run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(doctored.run_dir / f"{what}.csv", index=False)
    return neg_config(tmp, comp, name=f"on-{what}", train={f"{what}_from": str(tmp / f"doctored-{what}.yaml")})


def test_hard_negatives_join_their_folds_training_only(round1):
    tmp, comp, a = round1
    mine.main(neg_config(tmp, comp, mine={"min_score": 0.0, "top_k": 4}))
    b = neg_config(tmp, comp, name="b", train={"hard_negatives_from": str(tmp / "a.yaml")})
    competition = read_competition(b)
    folds = competition.folds
    mined = pd.read_csv(a.run_dir / "hard_negatives.csv")
    for k in range(b.folds.n_folds):
        dl = phase_loader(build(b, competition, k), 0)
        ds = dl.dataset
        base = len(training_rows(b, folds, k))
        added = [str(p) for p in ds.paths[base:]]
        assert added == [str(comp / p) for p in mined.path[mined.fold == k]]
        assert (np.asarray(ds.targets[base:]) == CLASSES.index("neg")).all()
        valid = {str(comp / "train" / f"{i}.jpg") for i in folds.image_id[folds.fold == k]}
        assert not valid & {str(p) for p in ds.paths}
    # a doctored file (another experiment's, so a's stays) that puts a validation image into its
    # own fold is refused, naming the line
    bad = mined.copy()
    v = folds.image_id[folds.fold == 0].iloc[0]
    bad.loc[len(bad)] = [v, f"train/{v}.jpg", 0, 0.99]
    c = _trains_on_a_doctored(tmp, comp, "hard_negatives", bad)
    with pytest.raises(PipelineError, match=rf"hard_negatives.csv line {len(bad) + 1}: .*in fold 0's validation set"):
        extra_rows(c, folds, 0, CLASSES)


def test_pseudo_labels_never_enter_a_validation_fold(round1):
    tmp, comp, a = round1
    pseudo.main(neg_config(tmp, comp, pseudo={"threshold": 0.0, "soft": True}))
    b = neg_config(tmp, comp, name="b", train={"pseudo_labels_from": str(tmp / "a.yaml")})
    competition = read_competition(b)
    folds = competition.folds
    dl = phase_loader(build(b, competition, 1), 0)
    base = len(training_rows(b, folds, 1))
    assert [p.parent.name for p in dl.dataset.paths[base:]] == ["test"] * 10
    x, y = next(iter(dl))
    assert y.dtype == torch.float32 and y.shape == (8, 2)  # soft targets, one-hot for real labels
    # validation is the untouched fold: pseudo-labelled images are not in it
    vdl, y_val = valid_loader(build(b, competition, 1).spec)
    assert all(p.parent.name == "train" for p in vdl.dataset.paths) and len(y_val) == (folds.fold == 1).sum()
    # a pseudo-label on a labelled image (in another experiment's file, so a's stays) is refused
    bad = pd.read_csv(a.run_dir / "pseudo_labels.csv")
    bad.loc[0, "path"] = f"train/{folds.image_id[folds.fold == 0].iloc[0]}.jpg"
    c = _trains_on_a_doctored(tmp, comp, "pseudo_labels", bad)
    with pytest.raises(PipelineError, match="pseudo_labels.csv line 2: .*is a labelled image"):
        extra_rows(c, folds, 0, CLASSES)
