import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import load_config, main as config_main
from pipeline.errors import PipelineError

from conftest import ROOT, make_config


def test_shipped_configs_load():
    for path in (ROOT / "configs").glob("*.yaml"):
        if path.name != "base.yaml":
            cfg = load_config(path)
            assert cfg.model.backbone and cfg.folds.n_folds >= 2


def test_base_inheritance_and_overrides(tmp_path, comp):
    (tmp_path / "base.yaml").write_text("train: {epochs: 7, lr: 1e-3}\nfolds: {n_folds: 3}\n")
    path = make_config(tmp_path, comp)
    doc = yaml.safe_load(path.read_text())
    doc["base"] = "base.yaml"
    del doc["train"]["epochs"]
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    assert cfg.train.epochs == 7  # from base
    assert cfg.train.lr == 3e-3  # child wins
    assert isinstance(load_config(path, ["train.lr=1e-4"]).train.lr, float)  # 1e-4 read as float
    cfg = load_config(path, ["train.epochs=3", "model.drop_rate=0.5"])
    assert (cfg.train.epochs, cfg.model.drop_rate) == (3, 0.5)


def test_config_is_frozen(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    with pytest.raises(ValidationError):
        cfg.train.epochs = 9


def test_unknown_key_names_key_and_file(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"epoch": 3})
    with pytest.raises(PipelineError, match=r"tiny\.yaml: unknown key 'train\.epoch'"):
        load_config(path)


def test_wrong_type_names_key_and_file(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"epochs": "three"})
    with pytest.raises(PipelineError, match=r"tiny\.yaml: train\.epochs: .*integer"):
        load_config(path)


def test_wrong_type_in_override_names_override(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"override train\.batch_size=big"):
        load_config(make_config(tmp_path, comp), ["train.batch_size=big"])
    with pytest.raises(PipelineError, match="expected key=value"):
        load_config(make_config(tmp_path, comp), ["train.epochs"])


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


def test_make_vars_and_stamps(tmp_path, comp, capsys):
    path = make_config(tmp_path, comp)
    assert config_main([str(path), "--make"]) == 0
    words = dict(w.split("=", 1) for w in capsys.readouterr().out.split())
    assert words["N_FOLDS"] == "2" and words["EXP"] == "tiny"
    stamp = tmp_path / "runs" / "tiny" / "stamps" / "train.yaml"
    assert yaml.safe_load(stamp.read_text())["train"]["epochs"] == 2
    before = stamp.stat().st_mtime_ns
    config_main([str(path), "infer.batch_size=4", "--make"])  # infer-only change
    assert stamp.stat().st_mtime_ns == before
    config_main([str(path), "train.epochs=5", "--make"])
    assert yaml.safe_load(stamp.read_text())["train"]["epochs"] == 5
    assert (tmp_path / "runs" / "tiny" / "config.yaml").is_file()


def test_cli_error_is_one_line(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"epochs": "x"})
    res = subprocess.run([sys.executable, "-m", "pipeline", "folds", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "train.epochs" in res.stderr


def test_error_in_base_file_names_the_base(tmp_path, comp):
    (tmp_path / "base.yaml").write_text("train: {epochz: 7}\n")
    path = make_config(tmp_path, comp)
    path.write_text("base: base.yaml\n" + path.read_text())
    with pytest.raises(PipelineError, match=r"base\.yaml: unknown key 'train\.epochz'"):
        load_config(path)


def test_warmup_must_fit_in_epochs(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"tiny\.yaml: train: .*warmup_epochs \(5.0\) must be below"):
        load_config(make_config(tmp_path, comp), ["train.warmup_epochs=5"])
