"""pipeline/stages/infer.py: test and OOF predictions through the same TTA, the CV table, and
models that validated on other folds refused."""

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import COLOURS, make_config

from pipeline.config_files import load_config, to_yaml
from pipeline.errors import PipelineError
from pipeline.io import write_text
from pipeline.runs import RunDir
from pipeline.stages import ensemble, infer


@pytest.fixture
def inferable(trained, tmp_path):
    """The trained fixture's models and folds, copied: each test infers into its own folder."""
    tmp, comp = trained
    for folder in ("runs", "folds"):
        shutil.copytree(tmp / folder, tmp_path / folder)
    return tmp_path, comp


def _with_tta(inferable, **tta_cfg):
    tmp, comp = inferable
    return load_config(make_config(tmp, comp, infer={"batch_size": 16, "tta": tta_cfg}))


def test_infer_oof_uses_the_same_tta_as_test(inferable, capsys):
    cfg = _with_tta(inferable, flips=["hflip", "vflip"], sizes=[40], merge="gmean")
    infer.main(cfg)
    run = cfg.run_dir
    table = pd.read_csv(run / "tta.csv")
    assert table.views.tolist() == ["none", "+hflip", "+vflip", "+40px", "all"]
    assert table.n_views.tolist() == [1, 2, 2, 2, 6]
    assert {"cv_accuracy", "cv_log_loss"} <= set(table.columns)
    oof = pd.read_csv(run / "oof.csv")
    folds = pd.read_csv(cfg.folds_file)
    assert oof.image_id.tolist() == folds.image_id.tolist() and oof.fold.tolist() == folds.fold.tolist()
    assert list(oof.columns) == ["image_id", "fold", "label", "ants", "bees"]
    assert np.allclose(oof[["ants", "bees"]].sum(axis=1), 1)
    # the OOF's CV is the table's "all" row: one rule for OOF and test
    y = (oof.label == "bees").to_numpy()
    acc = ((oof.bees > oof.ants).to_numpy() == y).mean()
    assert acc == pytest.approx(table.cv_accuracy.iloc[-1])
    # the plain view reproduces what training recorded for each fold
    trained = pd.concat([pd.read_csv(run / f"fold{k}" / "oof.csv") for k in (0, 1)]).set_index("image_id")
    no_tta = trained.loc[folds.image_id]
    y_idx = y.astype(int)
    p = no_tta[["ants", "bees"]].to_numpy()
    assert table.cv_accuracy.iloc[0] == pytest.approx((p.argmax(1) == y_idx).mean())
    assert "CV by TTA view set" in capsys.readouterr().out


def test_infer_without_tta_matches_training_oof(inferable):
    cfg = _with_tta(inferable, flips=[])
    infer.main(cfg)
    oof = pd.read_csv(cfg.run_dir / "oof.csv").set_index("image_id")
    trained = pd.concat([pd.read_csv(cfg.run_dir / f"fold{k}" / "oof.csv") for k in (0, 1)]).set_index("image_id")
    assert np.allclose(oof.loc[trained.index, ["ants", "bees"]], trained[["ants", "bees"]], atol=1e-5)
    assert pd.read_csv(cfg.run_dir / "tta.csv").views.tolist() == ["none"]


def test_infer_refuses_folds_the_models_were_not_trained_on(inferable):
    cfg = _with_tta(inferable)
    f = pd.read_csv(cfg.folds_file)  # this test's copy: the same split with the folds swapped
    f.assign(fold=1 - f["fold"]).to_csv(cfg.folds_file, index=False)
    with pytest.raises(PipelineError, match="fold0/oof.csv: fold 0 was trained on other folds"):
        infer.main(cfg)


def test_infer_refuses_a_checkpoint_of_other_train_settings(inferable):
    """Another run of the experiment (a SET override) left its models: infer names the key."""
    tmp, comp = inferable
    train = {"phases": [{"epochs": 2, "lr": 3e-3}], "batch_size": 8, "seed": 5}
    other = load_config(make_config(tmp, comp, train=train))
    with pytest.raises(PipelineError, match=r"fold0/best.pt: trained with other settings than this .*\(train.seed: "):
        infer.main(other)
    infer.main(_with_tta(inferable))  # the config the models were trained with


def test_multilabel_infer_gives_per_label_probabilities(multilabel):
    _, _, cfg = multilabel
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    assert list(oof.columns) == ["image_id", "fold", "tags"] + COLOURS
    p = oof[COLOURS].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and not np.allclose(p.sum(1), 1)  # sigmoids, not a softmax
    table = pd.read_csv(cfg.run_dir / "tta.csv")
    assert "cv_f1_macro" in table.columns and table.views.tolist() == ["none", "+hflip", "all"]


def test_a_sample_naming_the_id_column_otherwise_reaches_the_submission(inferable):
    tmp, comp = inferable
    sample = pd.read_csv(comp / "sample_submission.csv").rename(columns={"image_id": "id"})
    sample.to_csv(comp / "sample_id.csv", index=False)  # a file of its own: the fixture's stays
    data, tta = {"root": str(comp), "sample_submission": "sample_id.csv"}, {"batch_size": 16, "tta": {"flips": []}}
    with pytest.raises(
        PipelineError,
        match=r"sample_id.csv: first column is 'id', expected the id column 'image_id' \(set data.sample_id_col",
    ):
        infer.main(load_config(make_config(tmp, comp, data=data, infer=tta)))  # before any model is loaded
    cfg = load_config(make_config(tmp, comp, data={**data, "sample_id_col": "id"}, infer=tta))
    infer.main(cfg)
    test = pd.read_csv(cfg.run_dir / "test.csv")
    assert list(test.columns) == ["image_id", "ants", "bees"] and test.image_id.tolist() == sample.id.tolist()
    write_text(RunDir(cfg.run_dir).config, to_yaml(cfg))
    sub = ensemble.main([cfg.run_dir], out_dir=tmp / "subs")
    written = pd.read_csv(tmp / "subs" / "tiny.csv")
    assert list(written.columns) == ["id", "label"] and written.id.tolist() == sample.id.tolist()
    assert written.label.tolist() == np.where(test.ants > test.bees, "ants", "bees").tolist() == sub.label.tolist()
