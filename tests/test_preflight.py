"""pipeline/preflight.py: every image checked before the first epoch, once, in parallel."""

import io
import json
import os
import re

import pytest
from helpers import make_config, truncate

from pipeline import preflight
from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.runs import RunDir
from pipeline.stages import folds as folds_stage
from pipeline.stages import infer, train


def _split(tmp_path, comp, **sections):
    cfg = load_config(make_config(tmp_path, comp, **sections))
    folds_stage.main(cfg)
    return cfg


def _no_fold_starts(monkeypatch):
    def starts(*a, **k):
        raise AssertionError("a fold started training")

    monkeypatch.setattr(train, "train_fold", starts)


def test_a_truncated_train_image_stops_train_before_any_fold(tmp_path, comp, monkeypatch):
    cfg = _split(tmp_path, comp)
    truncate(comp / "train" / "tr005.jpg")
    _no_fold_starts(monkeypatch)
    image, table = re.escape(str(comp / "train" / "tr005.jpg")), re.escape(str(comp / "train.csv"))
    with pytest.raises(PipelineError, match=rf"^{image}: image is truncated or corrupt \({table} line 7\)$"):
        train.main(cfg)
    assert not RunDir(cfg.run_dir).last(0).exists() and not cfg.run_dir.exists()


def test_a_missing_test_image_stops_train_before_the_first_epoch(tmp_path, comp, monkeypatch):
    cfg = _split(tmp_path, comp)
    (comp / "test" / "te003.jpg").unlink()
    _no_fold_starts(monkeypatch)
    with pytest.raises(PipelineError, match=r"te003\.jpg: image not found \(.*/sample_submission\.csv line 5\)$"):
        train.main(cfg, fold=1)


def test_infer_checks_before_loading_a_model(tmp_path, comp):
    """No fold is trained here: the check's error comes first, not a missing checkpoint's."""
    cfg = _split(tmp_path, comp)
    truncate(comp / "test" / "te000.jpg", 0.3)
    with pytest.raises(
        PipelineError, match=r"te000\.jpg: image is truncated or corrupt \(.*sample_submission\.csv line 2\)"
    ):
        infer.main(cfg)


def test_the_switch_and_ddp_leave_the_check_to_one_process(tmp_path, comp, monkeypatch):
    calls = []
    monkeypatch.setattr(preflight, "check_images", lambda paths, where, cache_dir: calls.append((paths, where)))
    cfg = _split(tmp_path, comp)
    preflight.check_competition(cfg, folds_stage.load_folds(cfg))
    ((paths, where),) = calls
    assert (
        len(paths) == 32 + 10 and paths[5] == comp / "train" / "tr005.jpg" and paths[32] == comp / "test" / "te000.jpg"
    )
    assert where[5] == f"{comp}/train.csv line 7" and where[33] == f"{comp}/sample_submission.csv line 3"
    off = load_config(make_config(tmp_path, comp, name="off", runtime={"check_images": False}))
    preflight.check_competition(off, folds_stage.load_folds(off))
    monkeypatch.setenv("RANK", "1")
    preflight.check_competition(cfg, folds_stage.load_folds(cfg))
    assert len(calls) == 1


def test_a_transform_that_needs_a_mask_stops_training_in_the_check_not_infer(tmp_path, comp, monkeypatch):
    monkeypatch.setattr(preflight, "check_images", lambda *a, **k: None)
    cfg = _split(tmp_path, comp, train={"aug": {"transforms": [{"name": "MaskDropout", "p": 0.1}]}})
    folds = folds_stage.load_folds(cfg)
    words = r"train\.aug\.transforms: \[0\] MaskDropout: ValueError: MaskDropout requires \['mask'\]"
    with pytest.raises(PipelineError, match=rf"^{words}"):
        preflight.check_competition(cfg, folds)
    preflight.check_competition(cfg, folds, model=False)  # infer trains nothing: the list is not its to try


@pytest.fixture
def images(comp):
    paths = sorted((comp / "train").glob("*.jpg"))[:6]
    return paths, [f"train.csv line {i + 2}" for i in range(len(paths))]


def test_a_second_check_decodes_only_what_changed(tmp_path, images, monkeypatch):
    paths, where = images
    decoded, real = [], preflight.read_image
    monkeypatch.setattr(preflight, "read_image", lambda p: decoded.append(p) or real(p))
    cache = tmp_path / "cache"
    preflight.check_images(paths, where, cache)
    assert sorted(decoded) == paths
    checked = json.loads((cache / "checked.json").read_text())["images"]
    assert set(checked) == {str(p.resolve()) for p in paths}
    decoded.clear()
    preflight.check_images(paths, where, cache)
    assert decoded == []
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: a new mtime
    paths[4].write_bytes(paths[4].read_bytes() + b"\0")  # a new size, the old mtime
    os.utime(paths[4], ns=(st.st_atime_ns, paths[4].stat().st_mtime_ns - 10**9))
    preflight.check_images(paths, where, cache)
    assert sorted(decoded) == [paths[1], paths[4]]  # threads decode in any order
    decoded.clear()
    truncate(paths[2])  # a bad image is never remembered: it is decoded (and refused) every time
    for _ in range(2):
        with pytest.raises(PipelineError, match=r"image is truncated or corrupt \(train\.csv line 4\)$"):
            preflight.check_images(paths, where, cache)
    assert decoded == [paths[2], paths[2]]


def test_parallel_and_sequential_checks_name_the_same_first_bad_image(tmp_path, images):
    paths, where = images
    truncate(paths[4])
    paths[1].unlink()
    paths[5].write_text("not an image")
    errors = []
    for workers in (1, 4):
        with pytest.raises(PipelineError) as e:
            preflight.check_images(paths, where, tmp_path / "cache", workers)
        errors.append(str(e.value))
    assert errors[0] == errors[1] == f"{paths[1]}: image not found (train.csv line 3; and 2 more bad images)"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_shows_on_a_terminal_only(images, capsys, monkeypatch):
    paths, where = images
    preflight.check_images(paths, where)  # pytest's captured stderr is not a terminal
    assert capsys.readouterr().err == ""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    preflight.check_images(paths, where)
    assert "check images" in terminal.getvalue() and f"{len(paths)}/{len(paths)}" in terminal.getvalue()
