"""pipeline/folds_file.py: the folds file read back checked, and which rows a fold trains on."""

import pandas as pd
import pytest
from helpers import CLASSES, make_config

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.folds_file import check_folds, fold_images, load_folds, training_rows, unused_negatives
from pipeline.stages import folds as folds_stage


def test_negative_sampling_and_pool_split_the_training_folds(round1):
    _, _, cfg = round1
    folds = load_folds(cfg)
    for k in range(cfg.folds.n_folds):
        used, pool = training_rows(cfg, folds, k), unused_negatives(cfg, folds, k)
        others = folds[folds.fold != k]
        assert (used.fold != k).all() and (pool.fold != k).all()
        assert set(used.image_id) & set(pool.image_id) == set()
        assert set(used.image_id) | set(pool.image_id) == set(others.image_id)
        assert set(others.image_id[others.label == "pos"]) <= set(used.image_id)  # positives all kept
        n_neg = (others.label == "neg").sum()
        assert (used.label == "neg").sum() == round(0.4 * n_neg) and (pool.label == "neg").all()
        assert training_rows(cfg, folds, k).equals(used)  # the same sample every time


def test_check_folds_catches_leaks():
    df = pd.DataFrame({"id": ["x", "y", "x"], "fold": [0, 1, 1]})
    with pytest.raises(PipelineError, match="appears twice"):
        check_folds(df, "id", 2)
    df = pd.DataFrame({"id": ["x", "y", "z"], "g": [1, 1, 2], "fold": [0, 1, 1]})
    with pytest.raises(PipelineError, match="group '1' is split"):
        check_folds(df, "id", 2, "g")


def test_load_folds_refuses_changed_train_csv(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    folds_stage.main(cfg)
    train = pd.read_csv(comp / "train.csv")
    train.loc[0, "label"] = "bees" if train.loc[0, "label"] == "ants" else "ants"
    train.to_csv(comp / "train.csv", index=False)
    with pytest.raises(PipelineError, match="differ from"):
        load_folds(cfg)


def test_load_folds_refuses_another_split_and_a_missing_file(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    with pytest.raises(PipelineError, match=r"comp\.csv: folds file not found \(run make folds\)"):
        load_folds(cfg)
    folds_stage.main(cfg)
    other = load_config(make_config(tmp_path, comp, folds={"n_folds": 3, "dir": str(tmp_path / "folds")}))
    with pytest.raises(PipelineError, match="n_folds': 3"):
        load_folds(other)


def test_a_missing_image_is_named_by_its_line_in_train_csv(tmp_path, comp):
    """Not by its position within the fold's rows, nor in the folds file's name."""
    cfg = load_config(make_config(tmp_path, comp))
    folds_stage.main(cfg)
    rows = load_folds(cfg).query("fold == 1")
    image_id, line = rows.image_id.iloc[3], rows.index[3] + 2
    assert line != 3 + 2 and pd.read_csv(comp / "train.csv").image_id[line - 2] == image_id
    (comp / "train" / f"{image_id}.jpg").unlink()
    with pytest.raises(PipelineError, match=rf"{image_id}\.jpg: image not found \(.*/comp/train\.csv line {line}\)$"):
        fold_images(cfg, rows, CLASSES)
