"""Sweeps: one experiment per combination of a few lists of values, each a real config file.

Usage: python -m pipeline sweep CONFIG "model.backbone=a,b,c" "train.seed=1,2" [--dir DIR] [--submissions DIR]
       make sweep CONFIG=configs/x.yaml SWEEP="model.backbone=a,b,c train.seed=1,2"

The product of the lists makes the experiments. Each is configs/sweeps/<name>--<key>=<value>...yaml:
`base:` the swept config, its name, and the swept keys (a key inside a list, train.phases.0.lr,
is written as that item's key, `phases: {0: {lr: ...}}`, so the rest of the list is still the
base's), so it can be edited and rerun like any config. An edited file is kept
as it is. Keys given one value are set in every file but name none. The ensemble file
configs/sweeps/<name>--sweep--<keys>.ensemble.yaml (method: fit) lists them;
`make ensemble ENSEMBLE=` on it trains every member through Make, so -j and LAUNCH= farm them.
Prints the ensemble file's path. Must not import torch: Make runs this at parse time.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .config import Config, Ensemble
from .config_files import parse_override, read_chain, validate
from .errors import PipelineError
from .io import write_text

SWEEPS = "sweeps"  # the experiments' configs go to <the swept config's folder>/sweeps/
HEADER = "# Made by `make {by}` from {base} ({what}). Edit it and it is kept: it is never overwritten.\n"


def parse_sweep(words: list[str]) -> list[tuple[str, list[Any]]]:
    """'key=a,b,c' words as (key, values), each value read as YAML (1e-3 a float, true a bool)."""
    if not words:
        raise PipelineError('SWEEP: empty; give key=a,b words, e.g. SWEEP="model.backbone=a,b train.seed=1,2"')
    out = []
    for word in words:
        key, sep, values = word.partition("=")
        if not sep or not key:
            raise PipelineError(f"SWEEP: {word!r} is not key=a,b,c")
        items = [v.strip() for v in values.split(",")]
        if not values.strip() or any(not v for v in items):
            raise PipelineError(f"SWEEP: {key} has an empty value in {values!r}; list one or more, comma-separated")
        if key in (k for k, _ in out):
            raise PipelineError(f"SWEEP: {key} is given twice")
        out.append((key, [parse_override(f"{key}={v}")[1] for v in items]))
    return out


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's shortest tail that no other key shares (train.seed -> seed; two phases' lr ->
    phases.0.lr and phases.1.lr)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if parts[-n].isdigit():  # 0.lr says less than phases.0.lr
                continue
            if not any(o != key and (o == tail or o.endswith("." + tail)) for o in keys):
                out[key] = tail
                break
    return out


def value_text(value: Any) -> str:
    """A value as a file name can hold it: what it reads as, other characters as _."""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.removesuffix("\n...")).strip("_") or "_"


def written_key(doc: dict, keys: list[str]) -> list:
    """The key as the sweep's file writes it: a number that indexes one of the base's lists as an
    int, so the file sets that item's key and inherits the rest of the list (config_files._merge)."""
    node, out = doc, []
    for k in keys:
        if isinstance(node, list) and k.isdigit():
            out.append(int(k))
            node = node[int(k)] if int(k) < len(node) else None
        else:
            out.append(k)
            node = node.get(k) if isinstance(node, dict) else None
    return out


def nest(keys: list[str], value: Any) -> dict:
    for k in reversed(keys):
        value = {k: value}
    return value


def merge_into(doc: dict, more: dict) -> None:
    for k, v in more.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            merge_into(doc[k], v)
        else:
            doc[k] = v


def combinations(lists: list[tuple[str, list[tuple[str, Any]]]]) -> list[list[tuple[str, str, Any]]]:
    """Every combination as [(key, text, value), ...], the first key's values outermost."""
    return [
        [(key, text, value) for (key, _), (text, value) in zip(lists, combo)]
        for combo in itertools.product(*[values for _, values in lists])
    ]


def sweep_name(base_name: str, combo: list[tuple[str, str, Any]], short: dict[str, str]) -> str:
    """base--key=value--...: the keys in `short` (those that vary) in the sweep's order."""
    return "--".join([base_name] + [f"{short[k]}={value_text(v)}" for k, _, v in combo if k in short])


def experiment(base: Path, doc: dict, combo: list[tuple[str, str, Any]], name: str, out_dir: Path, who: str = "SWEEP"):
    """(the config's path, its text) for one combination, checked against the schema first (an
    error names `who`, the list or file that asked for the bad key or value)."""
    overrides = [f"{k}={t}" for k, t, _ in combo]
    try:
        validate(Config, base, [*overrides, f"name={name}"])
    except PipelineError as e:
        raise PipelineError(f"{who}: {e}") from None
    body = {}
    for key, _, value in combo:
        merge_into(body, nest(written_key(doc, key.split(".")), copy.deepcopy(value)))
    what = ", ".join(f"{k}={t}" for k, t, _ in combo)
    text = HEADER.format(base=base, what=what, by=who.lower()) + yaml.safe_dump(
        {"base": os.path.relpath(base, out_dir), "name": name, **body}, sort_keys=False
    )
    return out_dir / f"{name}.yaml", text


def keep_or_write(path: Path, text: str) -> str | None:
    """Write a config that is not there; keep one that is (a note when it was edited)."""
    if not path.is_file():
        write_text(path, text)
        return None
    return f"{path}: kept as edited" if path.read_text() != text else None


def write_sweep(
    config: str | Path, words: list[str], out_dir: str | Path | None = None, submissions: str = "submissions"
) -> tuple[Path, list[str]]:
    """Write each combination's config (an edited one is kept) and the sweep's ensemble file beside
    them (its submission to `submissions`); (the ensemble file, notes on kept files). Every
    combination is checked before any file is written."""
    base = Path(config)
    out_dir = Path(out_dir) if out_dir else base.parent / SWEEPS
    doc = read_chain(base)[0]
    if "name" not in doc:
        raise PipelineError(f"{base}: missing key 'name'")
    lists = [(k, [(t, parse_override(f"{k}={t}")[1]) for t in texts]) for k, texts in parse_sweep(words)]
    varied = [k for k, values in lists if len(values) > 1] or [k for k, _ in lists]  # a single value names none
    short = short_keys(varied)
    planned = [experiment(base, doc, c, sweep_name(doc["name"], c, short), out_dir) for c in combinations(lists)]
    notes = [note for path, text in planned if (note := keep_or_write(path, text))]
    ens = Ensemble(
        name=f"{doc['name']}--sweep--{'-'.join(short.values())}",
        members=[str(p) for p, _ in planned],
        method="fit",
        out_dir=submissions,
    )
    ens_path = out_dir / f"{ens.name}.ensemble.yaml"
    head = f"# Made by `make sweep` from {base}: its experiments, blended by weights fitted on their OOF.\n"
    write_text(ens_path, head + yaml.safe_dump(ens.model_dump(exclude_defaults=True), sort_keys=False))
    return ens_path, notes
