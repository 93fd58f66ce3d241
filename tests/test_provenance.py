"""pipeline/provenance.py: what made a run's outputs, recorded per stage."""

import hashlib
import json
import re

from helpers import make_config

from pipeline.__main__ import main
from pipeline.config_files import load_config
from pipeline.provenance import file_digest, git_state, input_digests


def test_each_stage_records_versions_commit_and_input_digests(tmp_path, comp):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}], "batch_size": 8})
    assert main(["folds", str(config)]) == 0
    assert main(["train", str(config), "--fold", "0"]) == 0
    doc = json.loads((tmp_path / "runs" / "tiny" / "provenance.json").read_text())
    train = doc["train"]
    assert train["command"] and train["host"] and re.fullmatch(r"\d+\.\d+\.\d+", train["python"])
    assert train["packages"]["torch"] and train["packages"]["timm"]
    assert re.fullmatch(r"[0-9a-f]{40}", train["git"]["commit"])  # this checkout is a git repo
    train_csv = str(comp / "train.csv")
    expected = "sha256:" + hashlib.sha256((comp / "train.csv").read_bytes()).hexdigest()[:16]
    assert train["inputs"][train_csv] == expected == file_digest(comp / "train.csv")
    assert train["inputs"] == input_digests(load_config(config))  # folds file and sample too
    assert main(["train", str(config), "--fold", "1"]) == 0
    assert set(json.loads((tmp_path / "runs" / "tiny" / "provenance.json").read_text())) == {"train"}


def test_outside_a_repository_there_is_no_commit(tmp_path):
    assert git_state(tmp_path) is None
