"""pipeline/stages/mine.py: each fold mines only images it never validated on, from the unused
negatives or a folder, and writes them in the format train.hard_negatives_from reads."""

import numpy as np
import pandas as pd
import pytest
from helpers import make_config, neg_config

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.folds_file import load_folds, unused_negatives
from pipeline.stages import mine


def test_select_keeps_the_highest_scores_above_the_threshold():
    s = np.array([0.2, 0.9, 0.6, 0.9, 0.4])
    assert mine.select(s, 0.5, None).tolist() == [1, 3, 2]
    assert mine.select(s, 0.5, 2).tolist() == [1, 3]
    assert mine.select(s, 0.95, None).tolist() == []


def test_mining_never_selects_an_image_of_the_fold_it_validates(round1, capsys):
    tmp, comp, _ = round1
    cfg = neg_config(tmp, comp, mine={"min_score": 0.0})  # keep the whole pool: the strictest leak check
    found = mine.main(cfg)
    out = pd.read_csv(cfg.run_dir / "hard_negatives.csv")
    assert list(out.columns) == ["image_id", "path", "fold", "score"] and len(out) == len(found) > 0
    folds = load_folds(cfg)
    for k in range(cfg.folds.n_folds):
        rows = out[out.fold == k]
        assert set(rows.image_id) == set(unused_negatives(cfg, folds, k).image_id)
        assert not set(rows.image_id) & set(folds.image_id[folds.fold == k])
        assert (rows.score.diff().dropna() <= 0).all() and rows.score.between(0, 1).all()
        assert rows.path.tolist() == [f"train/{i}.jpg" for i in rows.image_id]
    assert "false-positive rate on the validation folds" in capsys.readouterr().out
    assert "fp_rate" in pd.read_csv(cfg.run_dir / "tta.csv").columns


def test_mining_a_folder_pool(round1):
    tmp, comp, _ = round1
    cfg = neg_config(tmp, comp, mine={"pool": "extra_neg", "min_score": 0.0, "top_k": 3})
    out = mine.main(cfg)
    assert out.groupby("fold").size().tolist() == [3, 3]
    assert out.path.str.startswith("extra_neg/").all() and out.image_id.str.startswith("extra_neg/x").all()
    bad = neg_config(tmp, comp, mine={"pool": "train"})
    with pytest.raises(PipelineError, match=r"mine.pool: train/tr\d+.jpg is a labelled image \(train.csv line"):
        mine.main(bad)
    with pytest.raises(PipelineError, match="mine.pool: .*nowhere is not a folder"):
        mine.main(neg_config(tmp, comp, mine={"pool": "nowhere"}))


def test_mining_needs_a_negative_class(round1):
    tmp, comp, _ = round1
    with pytest.raises(PipelineError, match="data.negative_class is not set"):
        mine.main(load_config(make_config(tmp, comp, name="a")))
