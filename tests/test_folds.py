"""pipeline/stages/folds.py: stratified, grouped, multi-label splits, written once, checked."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import COLOURS, make_competition, make_config

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.folds_file import check_folds, folds_stale, load_folds
from pipeline.labels import encode
from pipeline.stages import folds as folds_mod
from pipeline.stages.folds import assign_folds


def test_stratified_counts_balanced():
    labels = np.array(["a"] * 70 + ["b"] * 25 + ["c"] * 5)
    fold = assign_folds(labels, None, 5, seed=1)
    for cls, n in [("a", 70), ("b", 25), ("c", 5)]:
        per_fold = np.bincount(fold[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n


def test_deterministic_for_a_seed():
    labels = np.array(["a", "b"] * 30)
    assert np.array_equal(assign_folds(labels, None, 4, 7), assign_folds(labels, None, 4, 7))
    assert not np.array_equal(assign_folds(labels, None, 4, 7), assign_folds(labels, None, 4, 8))


def test_groups_never_split():
    labels = np.array(["a", "b"] * 30)
    groups = np.repeat(np.arange(20), 3)
    fold = assign_folds(labels, groups, 4, 0)
    df = pd.DataFrame({"id": range(60), "g": groups, "fold": fold})
    assert df.groupby("g")["fold"].nunique().max() == 1
    check_folds(df, "id", 4, "g")


def test_main_writes_once_without_leaks(tmp_path, comp, capsys):
    cfg = load_config(make_config(tmp_path, comp))
    df = folds_mod.main(cfg)
    printed = capsys.readouterr().out  # a few classes: the full table, a row per class, a column per fold
    assert "rows per fold: 16 16" in printed and "2 classes" in printed
    assert [line.split() for line in printed.splitlines()[-2:]] == [["ants", "8", "8"], ["bees", "8", "8"]]
    path = cfg.folds_file
    on_disk = pd.read_csv(path, dtype={"image_id": str})
    train = pd.read_csv(comp / "train.csv")
    assert sorted(on_disk.image_id) == sorted(train.image_id)  # every image in exactly one fold
    assert on_disk.image_id.is_unique and set(on_disk.fold) == {0, 1}
    assert json.loads(path.with_suffix(".json").read_text())["n_folds"] == 2
    text = path.read_text()
    folds_mod.main(cfg)  # same config: same file
    assert path.read_text() == text and load_folds(cfg).equals(df)


def test_grouped_competition(tmp_path):
    comp = make_competition(tmp_path / "g", n_train=40, groups=True)
    cfg = load_config(make_config(tmp_path, comp, data={"root": str(comp), "group_col": "group"}))
    df = folds_mod.main(cfg)
    assert df.groupby("group")["fold"].nunique().max() == 1


def test_other_fold_spec_is_refused(tmp_path, comp):
    folds_mod.main(load_config(make_config(tmp_path, comp)))
    other = load_config(make_config(tmp_path, comp, folds={"n_folds": 3, "dir": str(tmp_path / "folds")}))
    with pytest.raises(PipelineError, match=r"comp\.csv: made with .*'n_folds': 3"):
        folds_mod.main(other)


def test_too_few_of_a_class(tmp_path, comp):
    train = pd.read_csv(comp / "train.csv")
    train.loc[0, "label"] = "wasps"
    train.to_csv(comp / "train.csv", index=False)
    with pytest.raises(PipelineError, match="class 'wasps' has 1 rows, fewer than folds.n_folds=2"):
        folds_mod.main(load_config(make_config(tmp_path, comp)))


def test_multilabel_folds_spread_every_label(multilabel):
    _, _, cfg = multilabel
    folds = pd.read_csv(cfg.folds_file)
    y = encode(folds.tags, COLOURS, " ")
    for k in (0, 1):
        assert (y[folds.fold.to_numpy() == k].sum(0) > 0).all()


def test_edited_train_csv_keeps_every_row_in_its_fold(tmp_path, capsys):
    """Rows added, removed and relabelled in train.csv after the split: the rest keep their folds,
    new rows go where their class is scarcest, and the stage says what changed."""
    comp = make_competition(tmp_path / "c", n_train=40)
    cfg = load_config(make_config(tmp_path, comp, folds={"n_folds": 4, "dir": str(tmp_path / "folds")}))
    before = folds_mod.main(cfg).set_index("image_id")["fold"]
    train = pd.read_csv(comp / "train.csv")
    train = train.drop(index=[3, 4])
    train.loc[5, "label"] = "bees" if train.loc[5, "label"] == "ants" else "ants"
    new = pd.DataFrame({"image_id": [f"new{i}" for i in range(8)], "label": ["ants"] * 6 + ["bees"] * 2})
    pd.concat([train, new]).to_csv(comp / "train.csv", index=False)
    capsys.readouterr()
    after = folds_mod.main(cfg)
    out = capsys.readouterr().out
    assert "8 rows added, 2 removed, 1 relabelled" in out and "delete" in out
    kept = after.set_index("image_id")["fold"]
    old_ids = [i for i in before.index if i in kept.index]
    assert (kept[old_ids] == before[old_ids]).all() and len(old_ids) == 38
    assert load_folds(cfg)["image_id"].tolist() == pd.read_csv(comp / "train.csv")["image_id"].tolist()
    counts = pd.crosstab(after["fold"], after["label"])
    assert counts.max().max() - counts.min().min() <= 2  # the new rows evened the classes out
    assert "up to date" in (folds_mod.main(cfg), capsys.readouterr().out)[1]


def test_edited_grouped_train_csv_puts_a_new_row_with_its_group(tmp_path):
    comp = make_competition(tmp_path / "g", n_train=40, groups=True)
    cfg = load_config(make_config(tmp_path, comp, data={"root": str(comp), "group_col": "group"}))
    before = folds_mod.main(cfg)
    train = pd.read_csv(comp / "train.csv")
    extra = pd.DataFrame({"image_id": ["late"], "label": ["bees"], "group": [train.group.iloc[7]]})
    pd.concat([train, extra]).to_csv(comp / "train.csv", index=False)
    after = folds_mod.main(cfg).set_index("image_id")
    assert after.loc["late", "fold"] == before.set_index("image_id").loc[train.image_id.iloc[7], "fold"]


def test_a_number_is_stratified_on_its_quantile_bins_and_groups_stay_whole(tmp_path):
    """Skewed numbers: every fold gets its share of each quantile bin (the rare high values
    included); with groups, no group is split."""
    from helpers import make_numbers, number_config

    from pipeline.labels import bin_edges, quantile_bins

    comp = make_numbers(tmp_path / "comp", n_train=100)
    train = pd.read_csv(comp / "train.csv")
    rng = np.random.default_rng(0)
    train["score"] = np.round(rng.exponential(2.0, 100), 2)  # a long tail
    train["g"] = [f"g{i // 2}" for i in range(100)]
    train.to_csv(comp / "train.csv", index=False)
    for group in (None, "g"):
        cfg = load_config(
            number_config(
                tmp_path, comp, data={"group_col": group}, folds={"n_folds": 5, "dir": str(tmp_path / str(group))}
            )
        )
        df = folds_mod.main(cfg)
        bins = quantile_bins(df["score"].astype(float), edges=bin_edges(df["score"].astype(float)))
        counts = pd.crosstab(bins, df["fold"]).to_numpy()
        assert counts.shape == (10, 5) and (counts.max(1) - counts.min(1)).max() <= (1 if group is None else 3)
        if group:
            assert df.groupby("g")["fold"].nunique().max() == 1


def test_an_ordinal_task_is_stratified_on_its_grades(tmp_path):
    from helpers import make_numbers, number_config

    comp = make_numbers(tmp_path / "comp", ordinal=True, n_train=40)
    df = folds_mod.main(load_config(number_config(tmp_path, comp, task="ordinal")))
    counts = pd.crosstab(df["score"], df["fold"]).to_numpy()
    assert counts.shape == (4, 2) and (counts.max(1) - counts.min(1)).max() <= 1


def test_a_hundred_classes_print_a_summary_and_keep_the_table_in_the_json(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp, folds={"n_folds": 3}))
    classes = [f"c{i:03d}" for i in range(120)]
    labels = [c for i, c in enumerate(classes) for _ in range(3 + i % 5)]  # 3..7 rows a class
    df = pd.DataFrame({"image_id": range(len(labels)), "label": labels})
    df["fold"] = folds_mod.assign_folds(df["label"], None, 3, 0)
    lines = folds_mod.summary(cfg, df)
    assert len(lines) == 4 and max(map(len, lines)) < 200  # whatever the number of classes
    assert "120 classes" in lines[1] and "smallest 'c000' 3" in lines[1]
    assert lines[2].startswith("smallest per fold: 0: 'c000' 1,")
    assert "is in" in lines[3] and str(cfg.folds_file.with_suffix(".json")) in lines[3]
    table = json.loads(folds_mod.spec_text(cfg, df))["rows_per_class_and_fold"]
    assert len(table) == 120 and table["c004"] == [3, 2, 2]  # 7 rows, spread over the 3 folds


def test_a_moved_or_renamed_competition_keeps_its_folds(tmp_path, comp, capsys):
    cfg = load_config(make_config(tmp_path, comp))
    folds_mod.main(cfg)
    made = cfg.folds_file.stat().st_mtime_ns
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(comp, moved)
    for f in moved.rglob("*"):
        os.utime(f)  # a plain copy: every file newer than the folds file
    config = make_config(tmp_path, comp, data={"root": str(moved)})
    now = load_config(config)
    assert now.data.competition == "comp" and now.folds_file == cfg.folds_file  # found by train.csv's digest
    assert not folds_stale(now)  # so Make does not run the folds stage, and no fold is stale
    folds_mod.main(now)
    assert "up to date" in capsys.readouterr().out and cfg.folds_file.stat().st_mtime_ns == made
    assert json.loads(cfg.folds_file.with_suffix(".json").read_text())["train_csv"] == str(moved / "train.csv")
    with open(moved / "train.csv", "a") as f:  # an edited train.csv behaves as before
        f.write("extra,ants\n")
    assert folds_stale(now)


def test_a_folds_file_of_the_release_before_digests_is_refused_in_one_line(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    folds_mod.main(cfg)
    spec_path = cfg.folds_file.with_suffix(".json")
    spec = json.loads(spec_path.read_text())
    old = {k: v for k, v in spec.items() if k not in ("train_digest", "rows_per_class_and_fold")}
    spec_path.write_text(json.dumps(old))
    assert folds_stale(cfg)  # make folds runs, and says what to do
    with pytest.raises(PipelineError, match=r"written by an earlier release.*run make folds to re-split"):
        folds_mod.main(cfg)
