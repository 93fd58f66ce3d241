"""pipeline/stages/pseudo.py: each fold's teacher labels the images for that fold only, in the
format train.pseudo_labels_from reads."""

import numpy as np
import pandas as pd
import pytest
from helpers import neg_config

from pipeline.stages import pseudo

CLASSES = ["neg", "pos"]


@pytest.mark.parametrize("soft", [False, True])
def test_pseudo_labels_format_and_fold_teachers(round1, soft):
    tmp, comp, a = round1
    cfg = neg_config(tmp, comp, pseudo={"threshold": 0.0, "soft": soft})
    out = pseudo.main(cfg)
    written = pd.read_csv(cfg.run_dir / "pseudo_labels.csv")
    assert list(written.columns) == ["image_id", "path", "fold", "label", "confidence"] + CLASSES
    assert len(written) == len(out) == 2 * 10  # threshold 0: every test image, once per fold
    assert np.allclose(written[CLASSES].sum(axis=1), 1)
    for k in (0, 1):
        teacher = pd.read_csv(a.run_dir / f"test_fold{k}.csv").set_index("image_id")
        rows = written[written.fold == k].set_index("image_id")
        probs = teacher.loc[rows.index, CLASSES].to_numpy()
        assert np.allclose(rows.confidence, probs.max(1))
        want = probs if soft else np.eye(2)[probs.argmax(1)]
        assert np.allclose(rows[CLASSES].to_numpy(), want)
    high = pseudo.main(neg_config(tmp, comp, pseudo={"threshold": 0.999}))
    assert (high.confidence >= 0.999).all()


def test_a_numbers_pseudo_labels_are_the_fold_mean_where_the_folds_agree(numbers):
    tmp, comp, cfg, _ = numbers["regression"]
    folds = [pd.read_csv(cfg.run_dir / f"test_fold{k}.csv").set_index("image_id").prediction for k in (0, 1)]
    mean, spread = (folds[0] + folds[1]) / 2, (folds[0] - folds[1]).abs() / 2  # the std of two values
    limit = float(np.median(spread))  # about half the images agree this well
    out = pseudo.main(cfg.model_copy(update={"pseudo": cfg.pseudo.model_copy(update={"max_spread": limit})}))
    written = pd.read_csv(cfg.run_dir / "pseudo_labels.csv")
    assert list(written.columns) == ["image_id", "path", "fold", "label", "spread", "prediction"] and len(out) == len(
        written
    )
    kept = sorted(spread.index[spread <= limit])
    for k in (0, 1):  # every kept image once per fold, its target the mean of the fold models
        rows = written[written.fold == k].set_index("image_id").sort_index()
        assert rows.index.tolist() == kept
        assert np.allclose(rows.prediction, mean[kept]) and np.allclose(rows.spread, spread[kept])
    assert 0 < len(kept) < len(spread)
