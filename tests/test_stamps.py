"""pipeline/stamps.py: a stage's stamp changes only when a value it reads changes; a key that a
newer release adds, at its default, leaves finished runs as they are."""

import hashlib
import shutil

import yaml
from helpers import make_config

from pipeline import stamps
from pipeline.config_files import load_config


def _cfg(tmp_path, comp, *overrides):
    return load_config(make_config(tmp_path, comp), list(overrides))


def test_a_stage_stamp_holds_what_the_stage_reads(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    path = stamps.write_stamp(cfg, "train")
    written = yaml.safe_load(path.read_text())
    assert path.parent == cfg.run_dir / "stamps" and path.name.startswith("train-")
    assert written["train.phases.0.epochs"] == 2 and written["train.phases"] == 1
    assert not any(k.startswith(("runtime.", "infer.")) or k == "data.sample_submission" for k in written)
    assert stamps.stamp_path(cfg, "train") == path
    # a change the stage does not read keeps its stamp; one it reads names a new one
    assert stamps.stamp_path(_cfg(tmp_path, comp, "infer.batch_size=4", "runtime.num_workers=3"), "train") == path
    infer = stamps.write_stamp(cfg, "infer")
    assert stamps.stamp_path(_cfg(tmp_path, comp, "infer.batch_size=4"), "infer") == infer
    assert stamps.stamp_path(_cfg(tmp_path, comp, "infer.tta.merge=gmean"), "infer") != infer
    changed = stamps.stamp_path(_cfg(tmp_path, comp, "train.phases.0.epochs=5"), "train")
    assert changed != path and not changed.exists()


def test_writing_a_new_stamp_drops_the_old_and_keeps_a_matching_one(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    path = stamps.write_stamp(cfg, "train")
    before = path.stat().st_mtime_ns
    assert stamps.write_stamp(cfg, "train") == path and path.stat().st_mtime_ns == before
    new = stamps.write_stamp(_cfg(tmp_path, comp, "train.seed=1"), "train")
    assert new.is_file() and not path.exists()
    assert stamps.stamp_path(cfg, "train") == path  # back to the old settings: stale again


def _as_if_written_by_another_release(path, **changes):
    """Replace a stamp by the one a release that wrote these values (None: a key it did not have)
    would have left, named by the digest of its own text."""
    doc = {**yaml.safe_load(path.read_text()), **changes}
    text = yaml.safe_dump({k: v for k, v in doc.items() if v is not None}, sort_keys=False)
    path.unlink()
    other = path.with_name(f"train-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml")
    other.write_text(text)
    return other


def test_a_key_added_at_its_default_leaves_the_stamp_matching(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    path = _as_if_written_by_another_release(
        stamps.write_stamp(cfg, "train"),
        **{"train.label_smoothing": None, "train.phases.0.freeze_bn": None, "train.aug.vflip": None},
    )
    assert stamps.stamp_path(cfg, "train") == path
    # the same key set away from its default is a change
    assert stamps.stamp_path(_cfg(tmp_path, comp, "train.label_smoothing=0.2"), "train") != path
    assert stamps.stamp_path(_cfg(tmp_path, comp, "train.phases.0.freeze_bn=true"), "train") != path


def test_a_changed_default_or_a_removed_phase_is_a_change(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    path = _as_if_written_by_another_release(stamps.write_stamp(cfg, "train"), **{"train.weight_decay": 0.05})
    assert not stamps.stamp_path(cfg, "train").exists()  # the run used another default: stale
    two = load_config(
        make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}, {"epochs": 1, "lr": 1e-4}]})
    )
    path = stamps.write_stamp(two, "train")
    assert (
        stamps.stamp_path(
            cfg.model_copy(update={"train": two.train.model_copy(update={"phases": two.train.phases[:1]})}), "train"
        )
        != path
    )


def test_a_stamp_of_the_earlier_nested_layout_is_not_read(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    legacy = cfg.run_dir / "stamps" / "train.yaml"
    legacy.parent.mkdir(parents=True)
    doc = cfg.model_dump(mode="json")
    legacy.write_text(yaml.safe_dump({k: doc[k] for k in ("data", "model", "train", "folds")}))
    assert stamps.stamp_path(cfg, "train") != legacy  # the stage reruns, and its files' own checks refuse
    new = stamps.write_stamp(cfg, "train")
    assert new.name.startswith("train-")


def test_matches_ignores_keys_the_schema_dropped():
    now = {"a": 1, "b": 2}
    assert stamps.same_settings({"a": 1, "b": 2, "gone": 5}, now, set_keys=set())
    assert not stamps.same_settings({"a": 1}, now, set_keys={"b"})
    assert stamps.same_settings({"a": 1}, now, set_keys={"a"})
    assert stamps.flatten({"t": {"p": [{"lr": 1}, {"lr": 2}], "f": ["h"]}}) == {
        "t.p": 2,
        "t.p.0.lr": 1,
        "t.p.1.lr": 2,
        "t.f": ["h"],
    }


def test_switching_a_trick_on_at_its_defaults_or_off_is_a_change(tmp_path, comp):
    path = make_config(tmp_path, comp)
    plain, ema = load_config(path), load_config(path, ["train.ema={}"])
    assert not stamps.matches(ema, "train", stamps.settings(plain, "train"))  # on: nothing but {} set
    assert not stamps.matches(plain, "train", stamps.settings(ema, "train"))  # and off again
    older = {k: v for k, v in stamps.settings(plain, "train").items() if not k.startswith(("train.ema", "train.swa"))}
    assert stamps.matches(plain, "train", older)  # a stamp from before the switch existed still holds


def test_the_test_side_keys_never_retrain(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    train, lr_find, infer = (stamps.write_stamp(cfg, s) for s in ("train", "lr_find", "infer"))
    for key in ("data.sample_id_col=id", "data.submission_classes=codes"):
        assert stamps.stamp_path(_cfg(tmp_path, comp, key), "train") == train
        assert stamps.stamp_path(_cfg(tmp_path, comp, key), "lr_find") == lr_find
        assert stamps.stamp_path(_cfg(tmp_path, comp, key), "infer") != infer  # infer reads the sample


def test_where_the_files_are_is_not_what_they_hold(tmp_path, comp):
    cfg = _cfg(tmp_path, comp)
    path = stamps.write_stamp(cfg, "train")
    shutil.copytree(comp, tmp_path / "moved")
    moved = _cfg(tmp_path, comp, f"data.root={tmp_path / 'moved'}", "data.name=other", "folds.dir=elsewhere")
    assert stamps.stamp_path(moved, "train") == path and stamps.matches(moved, "train", stamps.read_stamp(path))
