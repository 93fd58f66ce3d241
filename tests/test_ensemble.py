import numpy as np
import pandas as pd
import pytest

from pipeline import ensemble
from pipeline.config import load_config, to_yaml
from pipeline.errors import PipelineError

from conftest import make_config

CLASSES = ["ants", "bees"]


def fake_run(tmp_path, comp, name, test_probs, oof_probs, classes=CLASSES):
    """A finished experiment folder as infer leaves it, with chosen probabilities."""
    cfg = load_config(make_config(tmp_path, comp, name=name))
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text(to_yaml(cfg))
    sample = pd.read_csv(comp / "sample_submission.csv")
    train = pd.read_csv(comp / "train.csv")
    test = pd.DataFrame({"image_id": sample.image_id})
    test[classes] = test_probs
    test.to_csv(cfg.run_dir / "test.csv", index=False)
    oof = pd.DataFrame({"image_id": train.image_id, "fold": np.arange(len(train)) % 2, "label": train.label})
    oof[classes] = oof_probs
    oof.to_csv(cfg.run_dir / "oof.csv", index=False)
    return cfg.run_dir


def probs(n, p_first):
    p = np.asarray(p_first, dtype=float).reshape(-1)[:n] if np.ndim(p_first) else np.full(n, p_first)
    return np.stack([p, 1 - p], axis=1)


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
        comp / "sample_submission.csv", index=False)
    run = fake_run(tmp_path, comp, "a", probs(10, 0.8), probs(32, 0.5))
    sub = ensemble.main([run], out_dir=tmp_path / "subs")
    assert list(sub.columns) == ["image_id", "bees", "ants"]
    assert np.allclose(sub.ants, 0.8) and np.allclose(sub.bees, 0.2)
    assert (tmp_path / "subs" / "a.csv").is_file()


def test_incompatible_members_refused(tmp_path, comp):
    a = fake_run(tmp_path, comp, "a", probs(10, 0.5), probs(32, 0.5))
    b = fake_run(tmp_path, comp, "b", np.full((10, 2), 0.5), np.full((32, 2), 0.5), ["ants", "wasps"])
    with pytest.raises(PipelineError, match="classes differ"):
        ensemble.main([a, b], out_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


@pytest.fixture
def sample():
    return pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["ants"] * 3})


def test_build_refuses_missing_prediction(sample):
    test = pd.DataFrame({"image_id": ["x", "y"], "ants": [0.1, 0.9], "bees": [0.9, 0.1]})
    with pytest.raises(PipelineError, match="no prediction for id 'z'"):
        ensemble.build_submission(sample, test, CLASSES, "image_id", "s.csv")


def test_build_refuses_unknown_sample_layout(sample):
    test = pd.DataFrame({"image_id": ["x", "y", "z"], "ants": 0.5, "bees": 0.5})
    with pytest.raises(PipelineError, match="expected 'image_id' then one label column"):
        ensemble.build_submission(sample.assign(other=1), test, CLASSES, "image_id", "s.csv")
    with pytest.raises(PipelineError, match="expected the id column 'image_id'"):
        ensemble.build_submission(sample[["label", "image_id"]], test, CLASSES, "image_id", "s.csv")


@pytest.mark.parametrize("break_it, message", [
    (lambda s: s.assign(extra=1), "columns .* differ"),
    (lambda s: s.iloc[:2], "has 2 rows"),
    (lambda s: s.iloc[[1, 0, 2]].reset_index(drop=True), "line 2: id 'y'"),
    (lambda s: s.assign(label=["ants", None, "bees"]), "line 3: 'label' is empty"),
    (lambda s: s.assign(label=["ants", "wasps", "bees"]), "line 3: 'label' = 'wasps'"),
])
def test_check_submission_refuses(sample, break_it, message):
    good = sample.assign(label=["ants", "bees", "bees"])
    ensemble.check_submission(good, sample, CLASSES, "image_id", "s.csv")
    with pytest.raises(PipelineError, match=message):
        ensemble.check_submission(break_it(good), sample, CLASSES, "image_id", "s.csv")


def test_check_submission_probability_range():
    sample = pd.DataFrame({"image_id": ["x"], "ants": [0.5], "bees": [0.5]})
    with pytest.raises(PipelineError, match="'bees' = '1.5'"):
        ensemble.check_submission(sample.assign(bees=[1.5]), sample, CLASSES, "image_id", "s.csv")
