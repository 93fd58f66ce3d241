"""A multi-label competition (each image holds some of red, green, blue) through folds, train,
infer and ensemble to a valid submission, in both multi-label submission layouts."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_config, run_chain
from pipeline import ensemble
from pipeline.config import load_config
from pipeline.engine import encode
from pipeline.errors import PipelineError
from pipeline.metrics import accuracy, log_loss, tune_thresholds

COLOURS = ["blue", "green", "red"]


def make_multilabel(root, n_train=36, n_test=8, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def draw(path):
        on = rng.random(3) < 0.5
        on[rng.integers(3)] = True  # at least one label
        img = rng.integers(0, 60, (40, 40, 3))
        img[..., on] += 170  # channel order r, g, b
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
        return " ".join(sorted(c for c, k in zip(["red", "green", "blue"], on) if k))

    train = pd.DataFrame({"image_id": [f"tr{i:03d}" for i in range(n_train)]})
    train["tags"] = [draw(root / "train" / f"{i}.png") for i in train.image_id]
    train.to_csv(root / "train.csv", index=False)
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i in test_ids:
        draw(root / "test" / f"{i}.png")
    pd.DataFrame({"image_id": test_ids, "tags": "red"}).to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ml")
    comp = make_multilabel(tmp / "comp")
    cfg = load_config(make_config(
        tmp, comp, name="ml", metric="f1_macro",
        data={"root": str(comp), "label_col": "tags", "task": "multilabel", "train_images": "train/{id}.png",
              "test_images": "test/{id}.png"},
        train={"phases": [{"epochs": 3, "lr": 1e-2}], "batch_size": 8},
        infer={"batch_size": 16, "tta": {"flips": ["hflip"], "merge": "gmean"}}))
    return tmp, comp, run_chain(cfg)


def test_folds_spread_every_label(trained):
    _, _, cfg = trained
    folds = pd.read_csv(cfg.folds_file)
    y = encode(folds.tags, COLOURS, " ")
    for k in (0, 1):
        assert (y[folds.fold.to_numpy() == k].sum(0) > 0).all()


def test_training_and_infer_give_per_label_probabilities(trained):
    _, _, cfg = trained
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    assert list(oof.columns) == ["image_id", "fold", "tags"] + COLOURS
    p = oof[COLOURS].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and not np.allclose(p.sum(1), 1)  # sigmoids, not a softmax
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert np.isfinite(hist.valid_loss).all()
    table = pd.read_csv(cfg.run_dir / "tta.csv")
    assert "cv_f1_macro" in table.columns and table.views.tolist() == ["none", "+hflip", "all"]


def test_ensemble_writes_space_separated_labels_with_tuned_thresholds(trained, capsys):
    tmp, comp, cfg = trained
    sub = ensemble.main([cfg.run_dir, cfg.run_dir], name="ml2", out_dir=tmp / "subs", method="fit")
    sample = pd.read_csv(comp / "sample_submission.csv")
    written = pd.read_csv(tmp / "subs" / "ml2.csv", keep_default_na=False)
    assert list(written.columns) == ["image_id", "tags"] and written.image_id.tolist() == sample.image_id.tolist()
    assert all(set(v.split()) <= set(COLOURS) for v in written.tags)
    meta = json.loads((tmp / "subs" / "ml2.json").read_text())
    assert set(meta["thresholds"]) == set(COLOURS) and meta["metric"] == "f1_macro"
    test = pd.read_csv(cfg.run_dir / "test.csv").set_index("image_id").loc[sample.image_id, COLOURS]
    want = [" ".join(c for c, t in zip(COLOURS, meta["thresholds"].values()) if row[c] >= t)
            for _, row in test.iterrows()]
    assert written.tags.tolist() == want == sub.tags.tolist()
    assert "per-label thresholds tuned on the OOF F1" in capsys.readouterr().out
    with pytest.raises(PipelineError, match="a multi-label task takes mean, fit, rank"):
        ensemble.main([cfg.run_dir], out_dir=tmp / "subs", method="vote")


def test_ensemble_writes_one_probability_column_per_label(trained):
    tmp, comp, cfg = trained
    sample = pd.read_csv(comp / "sample_submission.csv")
    probs_sample = pd.DataFrame({"image_id": sample.image_id, "red": 0.5, "green": 0.5, "blue": 0.5})
    probs_sample.to_csv(comp / "sample_submission.csv", index=False)
    try:
        sub = ensemble.main([cfg.run_dir], name="mlp", out_dir=tmp / "subs")
    finally:
        sample.to_csv(comp / "sample_submission.csv", index=False)
    test = pd.read_csv(cfg.run_dir / "test.csv").set_index("image_id")
    assert list(sub.columns) == ["image_id", "red", "green", "blue"]
    assert np.allclose(sub[["red", "green", "blue"]], test.loc[sample.image_id, ["red", "green", "blue"]])


def test_multilabel_metrics_and_thresholds():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.3, 0.4], [0.6, 0.7], [0.1, 0.1]])
    assert accuracy(y, p) == pytest.approx(7 / 8)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert log_loss(y, p) == pytest.approx(want)
    t = tune_thresholds(y, p)
    assert ((p >= t) == (y > 0.5)).all()  # thresholds that separate each label perfectly here


def test_multilabel_refuses_what_needs_one_label(tmp_path):
    comp = make_multilabel(tmp_path / "comp", n_train=12)
    with pytest.raises(PipelineError, match="train.sampling: oversampling needs one label"):
        load_config(make_config(tmp_path, comp, data={"root": str(comp), "label_col": "tags",
                                                      "task": "multilabel"}, train={"sampling": "oversample"}))
