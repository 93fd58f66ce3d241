"""pipeline/config_files.py: inheritance, overrides, and one-line errors that name the file and
the key, for experiment configs and ensemble files alike."""

import pytest
import yaml
from helpers import make_config, neg_config

from pipeline.config_files import load_config, load_ensemble, load_upstream
from pipeline.errors import PipelineError


def test_base_inheritance_and_overrides(tmp_path, comp):
    (tmp_path / "base.yaml").write_text(
        "train: {phases: [{epochs: 7, lr: 1e-3}], batch_size: 4}\nfolds: {n_folds: 3}\n"
    )
    path = make_config(tmp_path, comp)
    doc = yaml.safe_load(path.read_text())
    doc["base"] = "base.yaml"
    del doc["train"]["phases"]
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    assert cfg.train.epochs == 7 and cfg.train.phases[0].lr == 1e-3  # from base
    assert cfg.train.batch_size == 8  # child wins
    lr = load_config(path, ["train.phases.0.lr=1e-4"]).train.phases[0].lr
    assert isinstance(lr, float) and lr == 1e-4  # 1e-4 read as float
    cfg = load_config(path, ["train.phases.0.epochs=3", "model.drop_rate=0.5"])
    assert (cfg.train.epochs, cfg.model.drop_rate) == (3, 0.5)
    with pytest.raises(PipelineError, match=r"train\.phases\.1\.lr: 1 is not an index .*1 items"):
        load_config(path, ["train.phases.1.lr=1"])


def test_unknown_key_names_key_and_file(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"epochs": 3})
    with pytest.raises(PipelineError, match=r"tiny\.yaml: unknown key 'train\.epochs'"):
        load_config(path)


def test_wrong_type_names_key_and_file(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"phases": [{"epochs": "three", "lr": 1e-3}]})
    with pytest.raises(PipelineError, match=r"tiny\.yaml: train\.phases\.0\.epochs: .*integer"):
        load_config(path)


def test_wrong_type_in_override_names_override(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"override train\.batch_size=big"):
        load_config(make_config(tmp_path, comp), ["train.batch_size=big"])
    with pytest.raises(PipelineError, match="expected key=value"):
        load_config(make_config(tmp_path, comp), ["train.batch_size"])


def test_missing_files_named(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"tiny\.yaml: data\.root: .*nowhere does not exist"):
        load_config(make_config(tmp_path, comp, data={"root": str(tmp_path / "nowhere")}))
    with pytest.raises(PipelineError, match=r"data\.train_csv"):
        load_config(make_config(tmp_path, comp, data={"root": str(comp), "train_csv": "nope.csv"}))
    with pytest.raises(PipelineError, match=r"model\.pretrained: .*w\.pth is not a file"):
        load_config(make_config(tmp_path, comp, model={"backbone": "x", "pretrained": "w.pth"}))
    with pytest.raises(PipelineError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_missing_required_key(tmp_path, comp):
    path = make_config(tmp_path, comp)
    doc = yaml.safe_load(path.read_text())
    del doc["model"]["backbone"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PipelineError, match="missing key 'model.backbone'"):
        load_config(path)


def test_error_in_base_file_names_the_base(tmp_path, comp):
    (tmp_path / "base.yaml").write_text("train: {epochz: 7}\n")
    path = make_config(tmp_path, comp)
    path.write_text("base: base.yaml\n" + path.read_text())
    with pytest.raises(PipelineError, match=r"base\.yaml: unknown key 'train\.epochz'"):
        load_config(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nmembers: [a]\nmethod: geomean\n", r"e\.yaml: method: Input should be 'mean'.*\(got 'geomean'\)"),
        ("name: x\nmembers: [a]\nmethods: mean\n", r"e\.yaml: unknown key 'methods'"),
        ("members: [a]\n", r"e\.yaml: missing key 'name'"),
        ("name: x\nmembers: [a, b]\nweights: [1]\n", r"e\.yaml: weights: one non-negative weight per member \(2\)"),
        (
            "name: x\nmembers: [a, b]\nmethod: fit\nweights: [1, 1]\n",
            r"e\.yaml: weights: only method mean takes fixed weights$",
        ),
        ("name: x\nmembers: [a\n", r"e\.yaml: line \d+ not valid YAML"),
    ],
)
def test_ensemble_files_get_the_same_errors_as_configs(tmp_path, text, message):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        load_ensemble(path)


def test_an_ensemble_file_may_inherit_too(tmp_path):
    (tmp_path / "base.yaml").write_text("members: [a, b]\nmethod: vote\n")
    (tmp_path / "e.yaml").write_text("base: base.yaml\nname: e\n")
    spec = load_ensemble(tmp_path / "e.yaml")
    assert (spec.name, spec.members, spec.method) == ("e", ["a", "b"], "vote")


def test_upstream_must_share_the_folds_and_not_be_itself(tmp_path, comp):
    a = neg_config(tmp_path, comp)
    same = neg_config(tmp_path, comp, name="a", train={"pseudo_labels_from": str(tmp_path / "a.yaml")})
    with pytest.raises(PipelineError, match="is this experiment"):
        load_upstream(same, "pseudo_labels_from")
    other = neg_config(
        tmp_path, comp, name="b", train={"hard_negatives_from": str(tmp_path / "a.yaml")}, folds={"n_folds": 3}
    )
    with pytest.raises(PipelineError, match="its folds would not be ours"):
        load_upstream(other, "hard_negatives_from")
    good = neg_config(tmp_path, comp, name="c", train={"hard_negatives_from": str(tmp_path / "a.yaml")})
    up = load_upstream(good, "hard_negatives_from")
    assert up.cfg.name == a.name and up.file == a.run_dir / "hard_negatives.csv"
    assert load_upstream(good, "pseudo_labels_from") is None
