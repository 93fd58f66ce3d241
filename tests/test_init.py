"""make init: tiny competitions in each layout a Kaggle folder comes in, the config init writes for
each (read back through the loader every stage uses), its questions, and one written config trained
and submitted through the whole chain."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import COLOURS, make, make_competition, make_multilabel, make_numbers, run_chain
from PIL import Image

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.stages import init


def run_init(tmp_path, comp, *args, **kw):
    """init's config, loaded, and its text."""
    path = init.main(str(comp), *args, configs_dir=str(tmp_path / "configs"), **kw)
    return load_config(path), path.read_text()


def test_one_label_column_of_class_names(tmp_path, capsys):
    comp = make_competition(tmp_path / "ants", n_train=40, groups=True)
    cfg, text = run_init(tmp_path, comp)
    d = cfg.data
    assert (cfg.name, d.id_col, d.label_col, d.task) == ("ants", "image_id", "label", "multiclass")
    assert (d.train_images, d.test_images, d.sample_id_col) == ("train/{id}.jpg", "test/{id}.jpg", None)
    assert cfg.metric == "accuracy" and "CHECK against the rules: the sample holds a class name per id" in text
    assert cfg.model.backbone == "tf_efficientnet_lite2" and cfg.model.pretrained == "offline"
    assert cfg.model.img_size == 96  # 40x48 images: twice the short side, a multiple of 32
    assert [p.frozen for p in cfg.train.phases] == [True, False, False]  # the few-hundred recipe
    assert d.group_col == "group"  # named like a group, 2 rows per value
    out = capsys.readouterr().out
    assert "assumed:" in out and "data.task: multiclass" in out and "make ensemble CONFIG=" in out


def test_probability_columns_imply_log_loss(tmp_path):
    comp = make_competition(tmp_path / "c", classes=("cat", "dog", "fox"), n_train=30)
    sample = pd.read_csv(comp / "sample_submission.csv")[["image_id"]]
    sample[["cat", "dog", "fox"]] = 1 / 3
    sample.to_csv(comp / "sample_submission.csv", index=False)
    cfg, text = run_init(tmp_path, comp)
    assert cfg.metric == "log_loss" and "a probability per class (3 columns)" in text


def test_several_labels_per_row(tmp_path):
    cfg, text = run_init(tmp_path, make_multilabel(tmp_path / "m", n_train=40))
    assert (cfg.data.task, cfg.data.label_col, cfg.data.label_sep) == ("multilabel", "tags", " ")
    assert "separated by a space" in text and cfg.data.train_images == "train/{id}.png"


def test_labels_joined_by_a_bar_with_a_column_per_label_in_the_sample(tmp_path):
    comp = make_multilabel(tmp_path / "m", n_train=40)
    train = pd.read_csv(comp / "train.csv")
    train["tags"] = train.tags.str.replace(" ", "|")
    train.to_csv(comp / "train.csv", index=False)
    sample = pd.read_csv(comp / "sample_submission.csv")[["image_id"]]
    sample[COLOURS] = 0.5
    sample.to_csv(comp / "sample_submission.csv", index=False)
    cfg, _ = run_init(tmp_path, comp)
    assert (cfg.data.task, cfg.data.label_sep, cfg.metric) == ("multilabel", "|", "log_loss")


@pytest.mark.parametrize(
    "col, task, other",
    [("class", "multiclass", "ordinal, if their order matters"), ("grade", "ordinal", "multiclass, if the order")],
)
def test_integer_targets_read_as_classes_or_grades_with_the_other_reading_named(tmp_path, capsys, col, task, other):
    comp = make_competition(tmp_path / "ints", classes=("0", "1", "2", "3"), n_train=40)
    for name, fill in (("train.csv", None), ("sample_submission.csv", 0)):
        t = pd.read_csv(comp / name).rename(columns={"label": col})
        t[col] = t[col] if fill is None else fill
        t.to_csv(comp / name, index=False)
    cfg, text = run_init(tmp_path, comp)
    assert cfg.data.task == task and other in text and other in capsys.readouterr().out
    assert cfg.metric == ("qwk" if task == "ordinal" else "accuracy")


def test_a_number_is_a_regression_scored_by_rmse(tmp_path):
    cfg, text = run_init(tmp_path, make_numbers(tmp_path / "n"))
    assert (cfg.data.task, cfg.metric, cfg.data.label_col) == ("regression", "rmse", "score")
    assert cfg.model.backbone == "tf_efficientnet_lite0" and cfg.train.loss == "mse"
    assert "one number per id in 'score'" in text


def nested(root, n_train=30, n_test=6):
    """PNGs in folders named by the id's first characters, train and test apart, deep under root;
    the sample names its ids 'id' where train.csv says 'image_id'."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = f"{'ab'[i % 2]}{'xy'[i // 2 % 2]}{i:03d}{split}"
            path = root / "input" / "images" / split / name[0] / name[1] / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    ids = lambda split, n: [f"{'ab'[i % 2]}{'xy'[i // 2 % 2]}{i:03d}{split}" for i in range(n)]  # noqa: E731
    pd.DataFrame({"image_id": ids("train", n_train), "label": ["u", "v"] * (n_train // 2)}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"id": ids("test", n_test), "label": "u"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_nested_folders_and_a_sample_id_named_otherwise(tmp_path):
    cfg, _ = run_init(tmp_path, nested(tmp_path / "deep"))
    d = cfg.data
    assert d.train_images == "input/images/train/{id[0]}/{id[1]}/{id}.png"
    assert d.test_images == "input/images/test/{id[0]}/{id[1]}/{id}.png"
    assert (d.id_col, d.sample_id_col) == ("image_id", "id")


def test_ids_that_carry_their_extension_and_jpeg_files(tmp_path):
    comp = make_competition(tmp_path / "ext", n_train=20)
    for split, table in (("train", "train.csv"), ("test", "sample_submission.csv")):
        for p in (comp / split).glob("*.jpg"):
            p.rename(p.with_suffix(".jpeg"))
        t = pd.read_csv(comp / table)
        t["image_id"] += ".jpeg"
        t.to_csv(comp / table, index=False)
    cfg, _ = run_init(tmp_path, comp)
    assert (cfg.data.train_images, cfg.data.test_images) == ("train/{id}", "test/{id}")


def test_a_long_tail_gets_a_sampling_suggestion_left_as_a_comment(tmp_path, capsys):
    comp = make_competition(tmp_path / "tail", counts={"ants": 40, "bees": 3})
    cfg, text = run_init(tmp_path, comp)
    assert cfg.train.sampling == "none" and "try train.sampling: oversample" in text
    assert "# negative_class:" in text  # two classes, one rare: a detector, perhaps


def one_hot(comp):
    """Train and sample both with a column per class (as some multi-label competitions ship)."""
    train = pd.read_csv(comp / "train.csv")
    for cls in ("ants", "bees"):
        train[cls] = (train.label == cls).astype(int)
    train.drop(columns="label").to_csv(comp / "train.csv", index=False)
    sample = pd.read_csv(comp / "sample_submission.csv")[["image_id"]].assign(ants=0.5, bees=0.5)
    sample.to_csv(comp / "sample_submission.csv", index=False)


@pytest.mark.parametrize(
    "damage, question",
    [
        (lambda c: shutil.copy(c / "sample_submission.csv", c / "sample_submission_b.csv"), None),
        (lambda c: ((c / "sample_submission.csv").rename(c / "sample_submission_a.csv"),
                    shutil.copy(c / "sample_submission_a.csv", c / "sample_submission_b.csv")),
         "which is the sample submission: sample_submission_a.csv, sample_submission_b.csv? pass --sample"),
        (lambda c: (c / "train" / "tr003.jpg").unlink(), "train.csv: line 5: image_id 'tr003' has no image"),
        (lambda c: [p.rename(c / "test" / p.name) for p in sorted((c / "train").glob("*.jpg"))[::3]],
         "the images are in several folders (train/{id}.jpg, test/{id}.jpg, ...)"),
        (lambda c: pd.read_csv(c / "train.csv").assign(other="x", label2="y")
         .drop(columns="label").to_csv(c / "train.csv", index=False), "which column is the label"),
        (lambda c: (shutil.rmtree(c / "train"), shutil.rmtree(c / "test")), "no image files"),
        (one_hot, "one column per class (ants, bees, ...): data.label_col takes one column of labels"),
    ],
)  # fmt: skip
def test_an_ambiguous_folder_is_a_one_line_question_and_nothing_is_written(tmp_path, damage, question):
    comp = make_competition(tmp_path / "q", n_train=20)
    damage(comp)
    if question is None:  # sample_submission.csv itself is there: it wins over its copies
        assert run_init(tmp_path, comp)[0].data.sample_submission == "sample_submission.csv"
        return
    with pytest.raises(PipelineError, match=re.escape(question)) as e:
        run_init(tmp_path, comp)
    assert "\n" not in str(e.value) and not (tmp_path / "configs").exists()


def test_two_training_tables_ask_for_one_which_make_passes_on(tmp_path):
    comp = make_competition(tmp_path / "t", n_train=20)
    (comp / "train.csv").rename(comp / "train_a.csv")
    shutil.copy(comp / "train_a.csv", comp / "train_b.csv")
    question = "train_a.csv, train_b.csv? pass --train FILE (make init TRAIN=FILE)"
    with pytest.raises(PipelineError, match=re.escape(question)):
        run_init(tmp_path, comp)
    assert run_init(tmp_path, comp, train_csv="train_b.csv")[0].data.train_csv == "train_b.csv"
    dry = make("-n", "init", f"COMP={comp}", "TRAIN=train_b.csv", "LABEL=label").stdout
    assert "--train train_b.csv" in dry and "--label label" in dry


def test_an_existing_config_is_never_overwritten(tmp_path):
    comp = make_competition(tmp_path / "ants", n_train=20)
    _, first = run_init(tmp_path, comp)
    with pytest.raises(PipelineError, match="already exists; init never overwrites a config: pass --name"):
        run_init(tmp_path, comp)
    assert (tmp_path / "configs" / "ants.yaml").read_text() == first
    assert run_init(tmp_path, comp, name="ants-2")[0].name == "ants-2"


def test_a_mistyped_backbone_is_answered_with_the_intended_name_first(tmp_path):
    comp = make_competition(tmp_path / "ants", n_train=20)
    with pytest.raises(PipelineError, match=r"'tf_efficientnet_liteO' is not a timm model name; did you mean "
                       r"tf_efficientnet_lite0,"):  # fmt: skip
        run_init(tmp_path, comp, backbone="tf_efficientnet_liteO")


def test_a_split_made_otherwise_gets_the_config_its_own_folds(tmp_path, monkeypatch):
    comp = make_competition(tmp_path / "ants", n_train=20)
    (tmp_path / "folds").mkdir()
    (tmp_path / "folds" / "ants.json").write_text('{"label_col": "label", "group_col": "x", "n_folds": 5, "seed": 42}')
    monkeypatch.chdir(tmp_path)  # folds/ is where make runs
    cfg, text = run_init(tmp_path, comp)
    assert cfg.data.name == "ants" and "was split by other group_col" in text


def test_the_written_config_trains_and_submits_through_the_chain(tmp_path, monkeypatch):
    """A tiny backbone (no local weights: pretrained hub, which the test swaps for none, offline)
    and the sandbox's folders; the rest as written: the recipe's eight epochs, TTA, the submission."""
    from pipeline.stages import ensemble

    comp = make_competition(tmp_path / "ants", n_train=24, n_test=6)
    monkeypatch.chdir(tmp_path)  # data.root is written relative to where init runs, as make runs
    path = init.main(str(comp), backbone="test_efficientnet", configs_dir=str(tmp_path / "configs"))
    doc = yaml.safe_load(path.read_text())
    assert doc["model"] == {"backbone": "test_efficientnet", "pretrained": "hub", "drop_rate": 0.2, "img_size": 96}
    cfg = load_config(path, ["model.pretrained=none", "folds.n_folds=2", "runtime.cache_dir=cache"])
    run_chain(cfg)
    ensemble.main([cfg.run_dir], cfg.name, tmp_path / "subs")
    sub = pd.read_csv(tmp_path / "subs" / "ants.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and list(sub.image_id) == list(sample.image_id)
    assert set(sub.label) <= {"ants", "bees"}


def folder(root, train: dict, sample: dict, files, sample_name="sample_submission.csv"):
    """A competition from its two tables and the image files' paths (40x48 noise each)."""
    rng = np.random.default_rng(0)
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / rel)
    pd.DataFrame(train).to_csv(root / "train.csv", index=False)
    pd.DataFrame(sample).to_csv(root / sample_name, index=False)
    return root


def test_numeric_ids_in_both_folders_take_each_split_its_own_folder(tmp_path):
    ids = list(range(1, 21))
    files = [f"{split}/{i}.jpg" for split in ("train", "test") for i in ids]
    comp = folder(tmp_path / "n", {"label": ["a", "b"] * 10, "id": ids}, {"id": ids, "label": "a"}, files)
    d = run_init(tmp_path, comp)[0].data
    assert (d.id_col, d.label_col, d.train_images, d.test_images) == ("id", "label", "train/{id}.jpg", "test/{id}.jpg")


def test_a_folder_per_id_and_an_old_style_sample_name(tmp_path):
    ids = [f"im{i:02d}" for i in range(20)]
    files = [f"train/{i}/{i}.png" for i in ids] + [f"test/t{i}.png" for i in range(4)]
    comp = folder(tmp_path / "per-id", {"image_id": ids, "label": ["a", "b"] * 10},
                  {"image_id": [f"t{i}" for i in range(4)], "label": "a"}, files, "sampleSubmission.csv")  # fmt: skip
    cfg, _ = run_init(tmp_path, comp)
    assert (cfg.name, cfg.data.name, cfg.data.train_images) == ("per-id", None, "train/{id}/{id}.png")


def test_integer_classes_with_a_placeholder_sample_are_read_as_classes_marked_check(tmp_path, capsys):
    ids = [f"im{i:02d}" for i in range(30)]
    files = [f"train/{i}.jpg" for i in ids] + [f"test/t{i}.jpg" for i in range(4)]
    comp = folder(tmp_path / "ph", {"image_id": ids, "class": [1, 2, 3] * 10},
                  {"image_id": [f"t{i}" for i in range(4)], "class": 0}, files)  # fmt: skip
    cfg, text = run_init(tmp_path, comp)
    assert cfg.data.submission_classes == "labels" and "CHECK: the sample's integers could be class codes" in text
    assert "could also be codes" in capsys.readouterr().out


def test_names_of_several_words_read_as_labels_name_the_other_reading(tmp_path):
    ids = [f"im{i:02d}" for i in range(30)]
    names = ["red fox", "arctic fox", "grey fox", "red wolf", "arctic wolf", "grey wolf"] * 5
    files = [f"train/{i}.jpg" for i in ids] + [f"test/t{i}.jpg" for i in range(4)]
    comp = folder(tmp_path / "w", {"image_id": ids, "animal": names},
                  {"image_id": [f"t{i}" for i in range(4)], "animal": "red fox"}, files)  # fmt: skip
    cfg, text = run_init(tmp_path, comp)
    assert cfg.data.task == "multilabel" and "or multiclass, if each cell is one class named in several words" in text


@pytest.mark.parametrize(
    "train, files, question",
    [
        ({"image_id": ["a0", "a1", "a2"], "score": ["1.5", "", "2.0"]}, [],
         "train.csv: line 3: 'score' is '': every row needs its number"),
        ({"image_id": ["a0", "a1", "a2"], "score": ["1.5", "NaN", "2.0"]}, [],
         "train.csv: line 3: 'score' is 'NaN': every row needs its number"),
        ({"image_id": ["a0", "a1", "a1"], "label": ["x", "y", "x"]}, [],
         "train.csv: line 4: duplicate image_id 'a1'"),
        ({"image_id": ["a0", "a1", "a2"], "label": ["x", "y", "x"]}, ["train/a2.png"],
         "the images are in several extensions (train/{id}.jpg, train/{id}.png, ...)"),
    ],
)  # fmt: skip
def test_tables_make_folds_would_refuse_are_refused_by_init_first(tmp_path, train, files, question):
    names = [f"train/{i}.jpg" for i in train["image_id"] if f"train/{i}.png" not in files] + files
    comp = folder(tmp_path / "bad", train, {"image_id": ["t0"], list(train)[1]: "0"}, names + ["test/t0.jpg"])
    with pytest.raises(PipelineError, match=re.escape(question)):
        run_init(tmp_path, comp)
    assert not (tmp_path / "configs").exists()


def test_a_label_of_0_and_1_naming_files_too_is_not_taken_for_the_ids(tmp_path):
    ids, test_ids = list(range(20)), list(range(100, 104))
    files = [f"train/{i}.jpg" for i in ids] + [f"test/{i}.jpg" for i in test_ids]
    comp = folder(tmp_path / "z", {"label": [0, 1] * 10, "id": ids}, {"id": test_ids, "label": 0.5}, files)
    cfg, _ = run_init(tmp_path, comp)
    assert (cfg.data.id_col, cfg.data.label_col, cfg.data.task, cfg.metric) == ("id", "label", "multiclass", "log_loss")
