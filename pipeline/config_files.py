"""Reading config files: YAML, `base:` inheritance, `key=value` overrides, and one-line errors
that name the file (the base file when the bad key is there) and the key.

Experiment configs and ensemble files go through the same loader and the same error text.
Must not import torch: Make reads configs at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from . import budget
from .config import Config, Ensemble
from .errors import PipelineError
from .runs import RunDir
from .suggest import did_you_mean

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`, users don't)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict:
    """A YAML mapping, or a one-line error naming the file (and the line, for bad syntax)."""
    try:
        with open(path) as f:
            doc = yaml.load(f, Loader=_Loader)
    except (FileNotFoundError, IsADirectoryError):
        raise PipelineError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: top level must be a mapping of keys, got {type(doc).__name__}")
    return doc


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    """over's keys on base's, section by section. A mapping of item numbers on a list sets those
    items' keys and inherits the rest of the list (a sweep's train.phases: {0: {lr: 0.01}})."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{prefix}{key}.")
        elif (
            isinstance(value, dict)
            and value
            and isinstance(out.get(key), list)
            and all(isinstance(k, int) for k in value)
        ):
            out[key] = _merge_items(out[key], value, f"{prefix}{key}")
        else:
            out[key] = value
    return out


def _merge_items(items: list, over: dict, key: str) -> list:
    out = list(items)
    for i, value in over.items():
        if not 0 <= i < len(out):
            raise PipelineError(f"{key}.{i}: the list it inherits has {len(out)} items")
        out[i] = _merge(out[i], value, f"{key}.{i}.") if isinstance(value, dict) and isinstance(out[i], dict) else value
    return out


def _leaves(doc: dict, prefix: tuple = ()):
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,)


def read_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[tuple, str]]:
    """The merged dict of a config and the files it inherits from (`base:`, relative to it),
    with the file each key came from, so an error can name the file that holds the bad key."""
    if path.resolve() in seen:
        raise PipelineError(f"{path}: base: inheritance loops back to itself")
    doc = read_yaml(path)
    base = doc.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise PipelineError(f"{path}: base: expected a file name, got {base!r}")
    parent, origin = read_chain(path.parent / base, seen + (path.resolve(),)) if base else ({}, {})
    origin.update({leaf: str(path) for leaf in _leaves(doc)})
    try:
        return _merge(parent, doc), origin
    except PipelineError as e:
        raise PipelineError(f"{path}: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise PipelineError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    return key.split("."), yaml.load(value, Loader=_Loader) if value else ""


def set_key(doc: dict, keys: list[str], value: Any) -> None:
    """Set doc[k1][k2]... = value; a number indexes a list (train.phases.1.lr=1e-3)."""
    for depth, k in enumerate(keys):
        if isinstance(doc, list):
            if not k.isdigit() or int(k) >= len(doc):
                raise PipelineError(
                    f"override {'.'.join(keys)}: {k} is not an index of the list (it has {len(doc)} items)"
                )
            k = int(k)
        elif not isinstance(doc, dict):
            raise PipelineError(f"override {'.'.join(keys)}: {keys[depth - 1]} is not a section")
        if depth == len(keys) - 1:
            doc[k] = value
        else:
            doc = doc.setdefault(k, {}) if isinstance(doc, dict) else doc[k]


def section_keys(schema: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The keys the section at loc takes (("train", "phases", "0") -> a phase's keys), for naming
    the nearest to an unknown one; [] where loc leaves the schema."""
    for part in loc:
        if part.isdigit():
            continue  # an item of a list of sections
        field = schema.model_fields.get(part)
        found = field and next((t for t in (field.annotation, *get_args(field.annotation)) if _is_schema(t)), None)
        if not found:
            return []
        schema = found
    return list(schema.model_fields)


def _describe(err: dict, origin: dict[tuple, str], default: str, schema: type[BaseModel] = Config) -> str:
    loc = tuple(str(p) for p in err["loc"])
    source = next((origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin), default)
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'{did_you_mean(loc[-1], section_keys(schema, loc[:-1]))}"
    if err["type"] == "missing":
        return f"{source}: missing key '{key}'"
    msg = err["msg"].removeprefix("Value error, ")  # our validators' own words
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    where = f"{key}: " if key else ""
    return f"{source}: {where}{msg}" + (f" (got {got})" if key and err["type"] != "value_error" else "")


def validate(schema: type[M], path: str | Path, overrides: list[str] = ()) -> M:
    """A config file (and what it inherits) with overrides applied, as a frozen `schema` object."""
    path = Path(path)
    doc, origin = read_chain(path)
    for text in overrides:
        keys, value = parse_override(text)
        set_key(doc, keys, value)
        origin[tuple(keys)] = f"{path} (override {text})"
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        raise PipelineError(_describe(e.errors()[0], origin, str(path), schema)) from None


def load_config(path: str | Path, overrides: list[str] = (), effective: bool = True) -> Config:
    """The effective config of an experiment: the file with its key=value overrides, the files it
    names checked to exist, data.name set to the folds file's when the competition folder was
    renamed since the split was made, and runtime.budget's decision applied once the run has made
    one (budget.effective; not with effective=False). Every stage, Make's stamps and the checks of
    checkpoints see this."""
    cfg = validate(Config, path, overrides)
    check_files(cfg, Path(path))
    from .folds_file import moved_competition  # pandas, only once the config holds

    name = moved_competition(cfg)  # a renamed competition folder: its folds file, found by digest
    if name is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"name": name})})
    return budget.effective(cfg) if effective else cfg


def load_ensemble(path: str | Path) -> Ensemble:
    """An ensemble file (members and method)."""
    return validate(Ensemble, path)


def check_files(cfg: Config, path: Path) -> None:
    d = cfg.data
    needed = {
        "data.root": Path(d.root),
        "data.train_csv": d.path(d.train_csv),
        "data.sample_submission": d.path(d.sample_submission),
    }
    for key, p in needed.items():
        if not p.exists():
            raise PipelineError(f"{path}: {key}: {p} does not exist")
    pre = cfg.model.weights
    if pre not in ("none", "hub") and not pre.startswith(("hub:", "py:")) and not Path(pre).is_file():
        raise PipelineError(
            f"{path}: model.pretrained: {pre} is not a file (nor none, hub, hub:<tag> or py:<module>:<function>)"
        )


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def explain(schema: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every key of the schema with its default and meaning, one line each; a section's line
    comes before its keys."""
    lines = []
    for name, field in schema.model_fields.items():
        key, meaning = prefix + name, field.description or ""
        item = (get_args(field.annotation) or (None,))[0]  # list[Phase] -> Phase; Ema | None -> Ema
        if _is_schema(field.annotation):
            lines += [_line(f"{key}:", meaning)] + explain(field.annotation, key + ".")
        elif get_origin(field.annotation) is list and _is_schema(item):
            default = _show(field.get_default(call_default_factory=True))
            lines += [_line(f"{key} = {default}", f"{meaning}; each item:")] + explain(item, key + ".N.")
        elif _is_schema(item) and type(None) in get_args(field.annotation):  # a switch: off, or its keys
            lines += [_line(f"{key} = null", f"{meaning}; set any key below to switch it on:")] + explain(
                item, key + "."
            )
        else:
            default = "(required)" if field.is_required() else _show(field.get_default(call_default_factory=True))
            lines.append(_line(f"{key} = {default}", meaning))
    return lines


def _line(left: str, meaning: str) -> str:
    return f"{left:<39} {meaning}"


def _is_schema(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _show(value) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json", exclude_defaults=True) if isinstance(v, BaseModel) else v for v in value]
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...")


# train.<key>: (the RunDir attribute of the other experiment's file, the make target writing it)
UPSTREAM = {"hard_negatives_from": ("hard_negatives", "mine"), "pseudo_labels_from": ("pseudo_labels", "pseudo")}


@dataclass(frozen=True)
class Upstream:
    """Another experiment this one trains on, and its file that this one reads."""

    cfg: Config
    file: Path


def load_upstream(cfg: Config, key: str) -> Upstream | None:
    """The experiment named by train.<key> and the file of it that this one trains on. It must
    use the same folds file, so that its fold k and this one's fold k validate the same images."""
    path = getattr(cfg.train, key)
    if path is None:
        return None
    try:
        up = load_config(path)
    except PipelineError as e:
        raise PipelineError(f"train.{key}: {e}") from None
    if up.name == cfg.name:
        raise PipelineError(f"train.{key}: {path} is this experiment ({cfg.name}); name another one")
    if up.folds_file != cfg.folds_file or up.folds.n_folds != cfg.folds.n_folds:
        raise PipelineError(
            f"train.{key}: {up.name} uses {up.folds.n_folds} folds of {up.folds_file}, this "
            f"experiment {cfg.folds.n_folds} of {cfg.folds_file}; its folds would not be ours"
        )
    return Upstream(up, getattr(RunDir(up.run_dir), UPSTREAM[key][0]))
