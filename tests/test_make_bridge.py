"""pipeline/make_bridge.py: the NAME=value words the Makefile reads."""

import pytest
from helpers import make_competition, make_config, neg_config

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.make_bridge import ensemble_vars, make_vars
from pipeline.stamps import write_stamp


def _words(text: str) -> list[tuple[str, str]]:
    return [tuple(w.split("=", 1)) for w in text.split()]


def test_paths_and_stamps_of_a_config(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    words = dict(_words(make_vars(cfg, "tiny.yaml")))
    assert words["N_FOLDS"] == "2" and words["EXP"] == "tiny" and words["RUN"] == str(cfg.run_dir)
    assert words["FOLDS_FILE"] == str(tmp_path / "folds" / "comp.csv")
    for stage in ("train", "infer", "lr_find", "mine", "pseudo"):
        assert words[f"STAMP_{stage}"].startswith(str(cfg.run_dir / "stamps" / f"{stage}-"))
    assert "TRAINS_ON+" not in words and not (cfg.run_dir / "stamps").exists()  # read only, nothing written
    written = write_stamp(cfg, "train")
    assert dict(_words(make_vars(cfg, "tiny.yaml")))["STAMP_train"] == str(written)


def test_other_experiments_outputs_come_with_their_target_and_config(tmp_path, comp):
    a = neg_config(tmp_path, comp)
    b = neg_config(
        tmp_path,
        comp,
        name="b",
        train={"hard_negatives_from": str(tmp_path / "a.yaml"), "pseudo_labels_from": str(tmp_path / "a.yaml")},
    )
    words = _words(make_vars(b, "b.yaml"))
    assert ("TRAINS_ON+", str(a.run_dir / "hard_negatives.csv")) in words
    assert ("OTHER+", f"{a.run_dir / 'pseudo_labels.csv'}|pseudo|{tmp_path / 'a.yaml'}") in words


def test_ensemble_members(tmp_path, comp):
    a = load_config(make_config(tmp_path, comp, name="a"))
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "config.yaml").write_text((tmp_path / "a.yaml").read_text())
    (tmp_path / "base.yaml").write_text("method: vote\nout_dir: subs\n")
    spec = tmp_path / "ab.yaml"
    members = f"[{tmp_path / 'a.yaml'}, {tmp_path / 'runs' / 'b'}, {tmp_path / 'a.yaml'}]"
    spec.write_text(f"base: base.yaml\nname: ab\nmembers: {members}\n")
    words = _words(ensemble_vars(str(spec)))
    assert words[0] == ("ENS_OUT", "subs/ab.csv")
    assert [v for k, v in words if k == "ENS_FILES+"] == [str(spec), str(tmp_path / "base.yaml")]  # its base too
    assert [v for k, v in words if k == "OTHER+"] == [f"{a.run_dir / 'test.csv'}|infer|{tmp_path / 'a.yaml'}"]
    assert [v for k, v in words if k == "MEMBERS+"] == [  # a member named twice: one rule; a folder as it is
        str(a.run_dir / "test.csv"),
        str(tmp_path / "runs" / "b" / "test.csv"),
    ]


def test_a_space_in_a_path_is_refused(tmp_path):
    spaced = tmp_path / "my comp"
    comp = make_competition(spaced)
    with pytest.raises(PipelineError, match="Make cannot handle the space in FOLDS_FILE"):
        make_vars(load_config(make_config(tmp_path, comp)), "tiny.yaml")
