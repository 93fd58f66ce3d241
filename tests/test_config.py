import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import Config, load_config, main as config_main, read_chain
from pipeline.errors import PipelineError

from conftest import ROOT, make_config


def test_shipped_configs_load():
    for path in (ROOT / "configs").glob("*.yaml"):
        if path.name != "base.yaml":
            cfg = Config.model_validate(read_chain(path)[0])  # schema only: some data is generated
            assert cfg.model.backbone and cfg.folds.n_folds >= 2
            if (ROOT / cfg.data.root).is_dir():
                load_config(path)


def test_base_inheritance_and_overrides(tmp_path, comp):
    (tmp_path / "base.yaml").write_text("train: {phases: [{epochs: 7, lr: 1e-3}], batch_size: 4}\n"
                                        "folds: {n_folds: 3}\n")
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


def test_config_is_frozen(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    with pytest.raises(ValidationError):
        cfg.train.batch_size = 9


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


def test_make_vars_and_stamps(tmp_path, comp, capsys):
    path = make_config(tmp_path, comp)
    assert config_main([str(path), "--make"]) == 0
    words = dict(w.split("=", 1) for w in capsys.readouterr().out.split())
    assert words["N_FOLDS"] == "2" and words["EXP"] == "tiny"
    stamp = tmp_path / "runs" / "tiny" / "stamps" / "train.yaml"
    assert yaml.safe_load(stamp.read_text())["train"]["phases"][0]["epochs"] == 2
    before = stamp.stat().st_mtime_ns
    config_main([str(path), "infer.batch_size=4", "--make"])  # infer-only change
    assert stamp.stat().st_mtime_ns == before
    config_main([str(path), "train.phases.0.epochs=5", "--make"])
    assert yaml.safe_load(stamp.read_text())["train"]["phases"][0]["epochs"] == 5
    assert (tmp_path / "runs" / "tiny" / "config.yaml").is_file()


def test_cli_error_is_one_line(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"batch_size": "x"})
    res = subprocess.run([sys.executable, "-m", "pipeline", "folds", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "train.batch_size" in res.stderr


def test_error_in_base_file_names_the_base(tmp_path, comp):
    (tmp_path / "base.yaml").write_text("train: {epochz: 7}\n")
    path = make_config(tmp_path, comp)
    path.write_text("base: base.yaml\n" + path.read_text())
    with pytest.raises(PipelineError, match=r"base\.yaml: unknown key 'train\.epochz'"):
        load_config(path)


def test_warmup_must_fit_in_epochs(tmp_path, comp):
    with pytest.raises(PipelineError,
                       match=r"tiny\.yaml: train\.phases\.0: .*warmup_epochs \(5.0\) must be below"):
        load_config(make_config(tmp_path, comp), ["train.phases.0.warmup_epochs=5"])


def test_one_discriminative_rule_and_lr_find_phase(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"train: .*set layer_decay or lr_ratio, not both"):
        load_config(make_config(tmp_path, comp), ["train.layer_decay=0.7", "train.lr_ratio=10"])
    with pytest.raises(PipelineError, match=r"lr_find.phase 3: train has 1 phases"):
        load_config(make_config(tmp_path, comp), ["lr_find.phase=3"])
