"""Hard-negative mining and pseudo-labels: what they write, and that neither ever puts an image
into training that the fold validates on."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import make_competition, make_config, run_chain
from pipeline import mine, pseudo
from pipeline import train as train_stage
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.folds import load_folds, training_rows, unused_negatives

CPU = torch.device("cpu")
CLASSES = ["neg", "pos"]


def _comp(tmp):
    comp = make_competition(tmp / "comp", classes=("neg", "pos"), counts={"neg": 30, "pos": 10})
    extra = comp / "extra_neg"
    extra.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(extra / f"x{i}.png")
    return comp


def _cfg(tmp, comp, name="a", **sections):
    base = {"data": {"root": str(comp), "negative_class": "neg"},
            "train": {"phases": [{"epochs": 1, "lr": 3e-3}], "batch_size": 8, "neg_fraction": 0.4},
            "infer": {"batch_size": 16, "tta": {"flips": []}}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return load_config(make_config(tmp, comp, name=name, **base))


@pytest.fixture(scope="module")
def round1(tmp_path_factory):
    """Experiment a: trained on the positives and 40% of the negatives, then inferred."""
    tmp = tmp_path_factory.mktemp("mine")
    comp = _comp(tmp)
    return tmp, comp, run_chain(_cfg(tmp, comp))


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


def test_select_keeps_the_highest_scores_above_the_threshold():
    s = np.array([0.2, 0.9, 0.6, 0.9, 0.4])
    assert mine.select(s, 0.5, None).tolist() == [1, 3, 2]
    assert mine.select(s, 0.5, 2).tolist() == [1, 3]
    assert mine.select(s, 0.95, None).tolist() == []


def test_mining_never_selects_an_image_of_the_fold_it_validates(round1, capsys):
    tmp, comp, _ = round1
    cfg = _cfg(tmp, comp, mine={"min_score": 0.0})  # keep the whole pool: the strictest leak check
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
    cfg = _cfg(tmp, comp, mine={"pool": "extra_neg", "min_score": 0.0, "top_k": 3})
    out = mine.main(cfg)
    assert out.groupby("fold").size().tolist() == [3, 3]
    assert out.path.str.startswith("extra_neg/").all() and out.image_id.str.startswith("extra_neg/x").all()
    bad = _cfg(tmp, comp, mine={"pool": "train"})
    with pytest.raises(PipelineError, match=r"mine.pool: train/tr\d+.jpg is a labelled image \(train.csv line"):
        mine.main(bad)
    with pytest.raises(PipelineError, match="mine.pool: .*nowhere is not a folder"):
        mine.main(_cfg(tmp, comp, mine={"pool": "nowhere"}))


def test_mining_needs_a_negative_class(round1):
    tmp, comp, _ = round1
    with pytest.raises(PipelineError, match="data.negative_class is not set"):
        mine.main(load_config(make_config(tmp, comp, name="a")))
    with pytest.raises(PipelineError, match="neg_fraction < 1 needs data.negative_class"):
        load_config(make_config(tmp, comp, name="c", train={"phases": [{"epochs": 1, "lr": 1e-3}],
                                                            "neg_fraction": 0.5}))


def test_hard_negatives_join_their_folds_training_only(round1):
    tmp, comp, a = round1
    mine.main(_cfg(tmp, comp, mine={"min_score": 0.0, "top_k": 4}))
    b = _cfg(tmp, comp, name="b", train={"hard_negatives_from": str(tmp / "a.yaml")})
    folds = load_folds(b)
    mined = pd.read_csv(a.run_dir / "hard_negatives.csv")
    for k in range(b.folds.n_folds):
        dl = train_stage.train_loader(b, folds, k, CLASSES, b.train.phases[0], _dc(), CPU)
        ds = dl.dataset
        base = len(training_rows(b, folds, k))
        added = [str(p) for p in ds.paths[base:]]
        assert added == [str(comp / p) for p in mined.path[mined.fold == k]]
        assert (np.asarray(ds.targets[base:]) == CLASSES.index("neg")).all()
        valid = {str(comp / "train" / f"{i}.jpg") for i in folds.image_id[folds.fold == k]}
        assert not valid & {str(p) for p in ds.paths}
    # a doctored file that puts a validation image into its own fold is refused, naming the line
    bad = mined.copy()
    v = folds.image_id[folds.fold == 0].iloc[0]
    bad.loc[len(bad)] = [v, f"train/{v}.jpg", 0, 0.99]
    bad.to_csv(a.run_dir / "hard_negatives.csv", index=False)
    with pytest.raises(PipelineError, match=rf"hard_negatives.csv line {len(bad) + 1}: .*in fold 0's validation set"):
        train_stage.train_loader(b, folds, 0, CLASSES, b.train.phases[0], _dc(), CPU)
    mined.to_csv(a.run_dir / "hard_negatives.csv", index=False)


def _dc():
    return {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
            "crop_pct": 1.0}


@pytest.mark.parametrize("soft", [False, True])
def test_pseudo_labels_format_and_fold_teachers(round1, soft):
    tmp, comp, a = round1
    cfg = _cfg(tmp, comp, pseudo={"threshold": 0.0, "soft": soft})
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
    high = pseudo.main(_cfg(tmp, comp, pseudo={"threshold": 0.999}))
    assert (high.confidence >= 0.999).all()


def test_pseudo_labels_never_enter_a_validation_fold(round1):
    tmp, comp, a = round1
    pseudo.main(_cfg(tmp, comp, pseudo={"threshold": 0.0, "soft": True}))
    b = _cfg(tmp, comp, name="b", train={"pseudo_labels_from": str(tmp / "a.yaml")})
    folds = load_folds(b)
    dl = train_stage.train_loader(b, folds, 1, CLASSES, b.train.phases[0], _dc(), CPU)
    base = len(training_rows(b, folds, 1))
    assert [p.parent.name for p in dl.dataset.paths[base:]] == ["test"] * 10
    x, y = next(iter(dl))
    assert y.dtype == torch.float32 and y.shape == (8, 2)  # soft targets, one-hot for real labels
    # validation is the untouched fold: pseudo-labelled images are not in it
    vdl, y_val = train_stage.valid_loader(b, folds, 1, CLASSES, _dc(), CPU)
    assert all(p.parent.name == "train" for p in vdl.dataset.paths) and len(y_val) == (folds.fold == 1).sum()
    # a pseudo-label on a labelled image is refused
    path = a.run_dir / "pseudo_labels.csv"
    good = pd.read_csv(path)
    bad = good.copy()
    bad.loc[0, "path"] = f"train/{folds.image_id[folds.fold == 0].iloc[0]}.jpg"
    bad.to_csv(path, index=False)
    with pytest.raises(PipelineError, match="pseudo_labels.csv line 2: .*is a labelled image"):
        train_stage.train_loader(b, folds, 0, CLASSES, b.train.phases[0], _dc(), CPU)
    good.to_csv(path, index=False)


def test_training_on_soft_pseudo_labels_runs(round1):
    tmp, comp, _ = round1
    pseudo.main(_cfg(tmp, comp, pseudo={"threshold": 0.0, "soft": True}))
    b = _cfg(tmp, comp, name="b2", train={"pseudo_labels_from": str(tmp / "a.yaml")})
    train_stage.main(b, fold=0)
    hist = pd.read_csv(b.run_dir / "fold0" / "history.csv")
    assert np.isfinite(hist.train_loss).all()


def test_upstream_must_share_the_folds_and_not_be_itself(round1):
    tmp, comp, _ = round1
    same = _cfg(tmp, comp, name="a", train={"pseudo_labels_from": str(tmp / "a.yaml")})
    with pytest.raises(PipelineError, match="is this experiment"):
        train_stage.extra_rows(same, load_folds(same), 0, CLASSES)
    other = _cfg(tmp, comp, name="b3", train={"hard_negatives_from": str(tmp / "a.yaml")},
                 folds={"n_folds": 3})
    with pytest.raises(PipelineError, match="its folds would not be ours"):
        train_stage.extra_rows(other, pd.DataFrame(), 0, CLASSES)
