"""pipeline/__main__.py: the command line gives one-line errors, and explains the config."""

import subprocess
import sys

from helpers import ROOT, make_config


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_config_error_is_one_line(tmp_path, comp):
    res = _run("folds", make_config(tmp_path, comp, train={"batch_size": "x"}))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "train.batch_size" in res.stderr


def test_stage_without_folds_is_a_one_line_error(tmp_path, comp):
    res = _run("train", make_config(tmp_path, comp))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "folds file not found (run make folds)" in res.stderr


def test_config_prints_the_resolved_config_and_explains_every_key(tmp_path, comp):
    res = _run("config", make_config(tmp_path, comp), "train.batch_size=4")
    assert res.returncode == 0 and "batch_size: 4" in res.stdout and "label_smoothing: 0.1" in res.stdout
    lines = _run("config", "--explain").stdout.splitlines()
    assert any(line.startswith("train.label_smoothing = 0.1 ") and "label smoothing" in line for line in lines)
    assert any(line.startswith("infer.tta.flips = [hflip] ") for line in lines)
    assert _run("config").returncode == 2


def test_a_stage_records_its_config_and_stamp(tmp_path, comp):
    path = make_config(tmp_path, comp)
    assert _run("folds", path).returncode == 0
    run = tmp_path / "runs" / "tiny"
    assert (run / "config.yaml").is_file() and not (run / "stamps").exists()  # folds reads no stamp
    assert _run("lr_find", path, "lr_find.num_iter=5").returncode == 0
    assert [p.name[:8] for p in (run / "stamps").iterdir()] == ["lr_find-"]
