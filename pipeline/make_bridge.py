"""What the Makefile needs from a config, as `NAME=value` words: the paths of the stage targets,
the stamp each stage's target depends on (stamps.py), the other experiments whose outputs come
first, the artifacts that exist but are damaged (BROKEN: Make remakes them), and whether the
folds file is behind train.csv's contents (FOLDS_STALE).

Usage: python -m pipeline make-vars CONFIG [key=value ...]
       python -m pipeline make-vars --ensemble ensembles/x.yaml

Must not import torch: Make runs this at parse time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config
from .config_files import UPSTREAM, load_config, load_ensemble, load_upstream, read_chain
from .errors import PipelineError
from .folds_file import folds_stale
from .io import damaged
from .runs import RunDir
from .stamps import STAGE_READS, stamp_path


def _words(pairs: list[tuple[str, Any]], where: str) -> str:
    """`NAME=value` words for the Makefile's foreach/eval (so no value may hold a space)."""
    for key, value in pairs:
        if " " in str(value):
            raise PipelineError(
                f"{where}: Make cannot handle the space in {key[:-1] if key.endswith('+') else key} '{value}'"
            )
    return " ".join(f"{k}={v}" for k, v in pairs)


def make_vars(cfg: Config, path: str) -> str:
    """RUN, the folds file, the stamps of each stage, and what other experiments' outputs (with
    the target and config that make them) this one trains on."""
    d = cfg.data
    pairs: list[tuple[str, Any]] = [
        ("RUN", cfg.run_dir),
        ("EXP", cfg.name),
        ("FOLDS_FILE", cfg.folds_file),
        ("N_FOLDS", cfg.folds.n_folds),
        ("SAMPLE_SUB", d.path(d.sample_submission)),
    ]
    pairs += [(f"STAMP_{stage}", stamp_path(cfg, stage)) for stage in STAGE_READS]
    pairs += [("BROKEN+", f) for f in artifacts(cfg) if damaged(f)]
    if folds_stale(cfg):  # train.csv's bytes, not its time: a copied folder stays up to date
        pairs.append(("FOLDS_STALE", "FORCE"))
    for key, (_, target) in UPSTREAM.items():
        up = load_upstream(cfg, key)
        if up is not None:
            pairs += [("TRAINS_ON+", up.file), ("OTHER+", f"{up.file}|{target}|{getattr(cfg.train, key)}")]
    return _words(pairs, path)


def artifacts(cfg: Config) -> list[Path]:
    """Every file of this experiment that a later stage reads."""
    run = RunDir(cfg.run_dir)
    files = [cfg.folds_file, run.test, run.oof, run.hard_negatives, run.pseudo_labels]
    for k in range(cfg.folds.n_folds):
        files += [run.fold_oof(k), run.best(k), run.test_fold(k)]
    return files


def ensemble_vars(path: str) -> str:
    """The submission an ensemble file writes, the files it reads (itself and what it inherits),
    and each member's test.csv (with the config that makes it, when the member is a config
    rather than a run folder)."""
    spec = load_ensemble(path)
    pairs: list[tuple[str, Any]] = [("ENS_OUT", Path(spec.out_dir) / f"{spec.name}.csv"), ("ENS_NAME", spec.name)]
    pairs += [("ENS_FILES+", f) for f in dict.fromkeys([path, *read_chain(Path(path))[1].values()])]
    for member in dict.fromkeys(spec.members):  # a member named twice gets one rule
        if Path(member).is_file():
            test = RunDir(load_config(member).run_dir).test
            pairs += [("MEMBERS+", test), ("OTHER+", f"{test}|infer|{member}")]
        else:
            load_config(Path(member) / "config.yaml")  # a run folder: one that a stage has written
            pairs.append(("MEMBERS+", RunDir(Path(member)).test))
    return _words(pairs, path)
