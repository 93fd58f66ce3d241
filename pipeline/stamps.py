"""Which config values each stage's outputs depend on, and whether outputs made with older values
still hold: the stamps Make compares, and the check before a fold resumes its last.pt.

A stage that runs writes the values it reads (STAGE_READS) to
runs/<name>/stamps/<stage>-<digest>.yaml, and its Make target depends on that file. Make asks
`stamp_path` for the name: the stamp on disk if the settings still match it, otherwise a new
name that does not exist yet, so Make sees the stage as stale (under -n and -q too, without
anything being written). Settings match when every key in the stamp holds the same value now,
and every key the stamp lacks holds its default (a key that a newer release added): upgrading
never makes a finished run stale; changing a value it used does.
Must not import torch: Make runs this at parse time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from .config import Config
from .errors import PipelineError
from .io import write_text
from .runs import RunDir

# The data keys only the test side reads (the sample, its id column, the submission's class form):
# training never depends on them. infer does (it writes the run's config.yaml, which ensemble reads).
TEST_SIDE = ("-data.sample_submission", "-data.sample_id_col", "-data.submission_classes", "-data.test_images")

# The config values each stage's outputs depend on: sections (or keys), less those after a "-".
# runtime is in none of them: the device, workers or precision never make an output stale, nor
# does inference's batch size (tests/test_tta.py: the views do not depend on batching).
STAGE_READS = {
    "train": ("data", "model", "train", "folds", *TEST_SIDE),
    "lr_find": ("data", "model", "train", "folds", "lr_find", *TEST_SIDE),
    "show_batch": ("data", "model", "train", "folds", "infer", "-infer.batch_size"),
    "infer": ("data", "model", "folds", "infer", "metric", "-infer.batch_size"),
    "mine": ("data", "infer", "mine", "-infer.batch_size"),
    "pseudo": ("data", "infer", "pseudo", "-infer.batch_size"),
}

# ----------------------------------------------------------------------------- stamps


def flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'phases': [{'lr': 1}]}} -> {'train.phases': 1, 'train.phases.0.lr': 1}: a list
    of sections counts its items, so a removed item is a change too."""
    out = {}
    for key, value in doc.items():
        key = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, key + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = len(value)
            for i, item in enumerate(value):
                out.update(flatten(item, f"{key}.{i}."))
        else:
            out[key] = value
    return out


def switched_on(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """'on' for each optional section that is set (train.ema: {} switches EMA on at its defaults,
    which a dump without defaults would show as nothing at all)."""
    out = {}
    for name, field in type(model).model_fields.items():
        value, key = getattr(model, name), prefix + name
        if isinstance(value, BaseModel):
            if type(None) in get_args(field.annotation):
                out[key] = "on"
            out.update(switched_on(value, key + "."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.update(switched_on(item, f"{key}.{i}."))
    return out


def settings(cfg: Config, stage: str, exclude_defaults: bool = False) -> dict[str, Any]:
    """The values a stage reads, flattened; with exclude_defaults, only those set away from the
    default. An optional section reads 'on' when set (its keys follow) and null when not."""
    doc = cfg.model_dump(mode="json", exclude_defaults=exclude_defaults)
    reads = STAGE_READS[stage]
    flat = flatten({k: doc[k] for k in reads if k in doc})
    flat.update({k: v for k, v in switched_on(cfg).items() if k.split(".")[0] in reads})
    drop = tuple(r[1:] for r in reads if r.startswith("-"))
    return {k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".") for d in drop)}


# Where the files are, not what they hold: a run copied to another machine or folder, or a
# competition folder moved or renamed, still matches. What the files hold is checked where they
# are read (the folds file against train.csv's rows; make-vars compares train.csv's digest).
LOCATIONS = ("data.root", "data.name", "folds.dir")


def same_settings(old: dict, now: dict, set_keys: set[str]) -> bool:
    """Whether outputs made with `old` are what `now` makes: every key of `old` other than
    LOCATIONS holds the same value now (keys the schema has dropped are ignored), and each key
    `old` lacks is not among `set_keys`, the keys set away from their defaults."""
    return all(k in LOCATIONS or (old[k] == v if k in old else k not in set_keys) for k, v in now.items())


def differences(cfg: Config, stage: str, old: dict) -> list[str]:
    """The keys other than LOCATIONS whose values in `old` are not what `cfg` reads now, as
    'key: old -> now'."""
    now, set_keys = settings(cfg, stage), set(settings(cfg, stage, True))
    return [
        f"{k}: {old.get(k, '(default)')} -> {v}"
        for k, v in now.items()
        if k not in LOCATIONS and ((k in old and old[k] != v) or (k not in old and k in set_keys))
    ]


def matches(cfg: Config, stage: str, old: dict | None) -> bool:
    """Whether outputs made with the settings `old` (a stamp's, or last.pt's) are what `cfg` would make now."""
    return old is not None and same_settings(old, settings(cfg, stage), set(settings(cfg, stage, True)))


def made_with(cfg: Config, stage: str, data: str) -> dict:
    """What a stage's output records it was made with: the settings it read from the effective
    config (config_files.effective_config), the digest of the rows it read, and one digest of both."""
    now = settings(cfg, stage)
    return {"settings": now, "data": data, "digest": hashlib.sha256((stamp_text(now) + data).encode()).hexdigest()[:16]}


def recorded(made: dict | None, path: Path, redo: str) -> dict:
    """`made` (a checkpoint's record, stamps.made_with's keys), or a one-line error when the file
    was written by an earlier release, which recorded no settings: `redo` says what makes it again."""
    if not isinstance(made, dict) or not isinstance(made.get("settings"), dict) or "data" not in made:
        raise PipelineError(f"{path}: written by an earlier release, which recorded no settings; {redo}")
    return made


def read_stamp(path: Path) -> dict | None:
    """A stamp's settings (flat), or None."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return flatten(doc) if isinstance(doc, dict) and doc else None


def _on_disk(run: RunDir, stage: str) -> list[Path]:
    return run.stamps(stage)


def stamp_path(cfg: Config, stage: str) -> Path:
    """The stamp of the current settings: one on disk that matches them, else a new name."""
    run, now, set_keys = RunDir(cfg.run_dir), settings(cfg, stage), set(settings(cfg, stage, True))
    for old in _on_disk(run, stage):
        found = read_stamp(old)
        if found is not None and same_settings(found, now, set_keys):
            return old
    return run.stamp(stage, hashlib.sha256(stamp_text(now).encode()).hexdigest()[:12])


def stamp_text(values: dict) -> str:
    return yaml.safe_dump(values, sort_keys=False)


def write_stamp(cfg: Config, stage: str) -> Path:
    """Called when a stage starts: record the settings its outputs are made with (a matching stamp
    is left as it is, so its time still predates the outputs), and drop the stage's other stamps."""
    path = stamp_path(cfg, stage)
    if not path.is_file():
        write_text(path, stamp_text(settings(cfg, stage)))
    for other in _on_disk(RunDir(cfg.run_dir), stage):
        if other != path:
            other.unlink(missing_ok=True)
    return path
