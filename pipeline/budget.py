"""runtime.budget: an experiment's training held to a number of minutes.

The first fold to train measures its speed over the first steps of its first epoch (the steps the
estimate times, train.Clock), then stops that epoch and decides how many epochs of each phase fit:
every phase's epochs scaled by one factor, at least one each, on every fold. The decision is
runs/<name>/budget.json, and every fold trains with it (under Make each fold is a process of its
own, and folds of different lengths would not make one CV). The epochs of a config that fits are
kept as they are. Torch-free: the arithmetic and the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .config import Config
from .errors import PipelineError
from .runs import RunDir


class Measured(Exception):
    """Raised by the first fold's clock once it has timed its steps: seconds of an epoch per phase."""

    def __init__(self, rate: float, epoch_seconds: list[float]):
        super().__init__(f"{rate:.0f} img/s")
        self.rate, self.epoch_seconds = rate, epoch_seconds


def path(cfg: Config) -> Path:
    return RunDir(cfg.run_dir).root / "budget.json"


def scaled_epochs(epochs: list[int], epoch_seconds: list[float], n_folds: int, budget_s: float) -> list[int]:
    """Each phase's epochs times one factor (rounded down, at least 1) so that n_folds folds take at
    most budget_s; the epochs as given when they fit. An error when one epoch each does not fit."""
    whole = n_folds * sum(e * s for e, s in zip(epochs, epoch_seconds))
    if whole <= budget_s:
        return list(epochs)
    least = n_folds * sum(epoch_seconds)
    if least > budget_s:
        raise PipelineError(
            f"runtime.budget: {minutes(budget_s / 60)} cannot hold one epoch of each phase on {n_folds} folds "
            f"(about {minutes(least / 60)} at the speed measured); raise it, or use fewer folds or phases"
        )
    factor = budget_s / whole
    out = [max(1, math.floor(e * factor)) for e in epochs]
    while n_folds * sum(e * s for e, s in zip(out, epoch_seconds)) > budget_s:  # the 1s may overshoot
        q = max((i for i, e in enumerate(out) if e > 1), key=lambda i: out[i] * epoch_seconds[i])
        out[q] -= 1
    return out


def decide(cfg: Config, m: Measured | None) -> dict:
    """The decision for this run, written unless another fold's process wrote one first (then that).
    m None: the first epoch ended before its steps could be timed (a fold of one step trains in
    no time), and the epochs stay as written."""
    epochs = [p.epochs for p in cfg.train.phases]
    seconds = m.epoch_seconds if m else [0.0] * len(epochs)
    chosen = scaled_epochs(epochs, seconds, cfg.folds.n_folds, cfg.runtime.budget * 60)
    doc = {
        "budget_min": cfg.runtime.budget,
        "img_per_s": round(m.rate, 1) if m else None,
        "epoch_seconds": [round(s, 2) for s in seconds],
        "configured_epochs": epochs,
        "epochs": chosen,
        "configured_min": round(cfg.folds.n_folds * sum(e * s for e, s in zip(epochs, seconds)) / 60, 4),
        "estimate_min": round(cfg.folds.n_folds * sum(e * s for e, s in zip(chosen, seconds)) / 60, 4),
    }
    p = path(cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # the first fold's decision holds
    except FileExistsError:
        return json.loads(p.read_text())
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    return doc


def read(cfg: Config) -> dict | None:
    """The run's decision when it was made for these phases' epochs, else None."""
    try:
        doc = json.loads(path(cfg).read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("configured_epochs") == [p.epochs for p in cfg.train.phases] else None


def applied(cfg: Config, doc: dict) -> Config:
    """The effective config: cfg with each phase's epochs as the decision says, and no budget left
    to decide (runtime.budget null: the run's config.yaml says what was trained)."""
    phases = [p.model_copy(update={"epochs": e}) for p, e in zip(cfg.train.phases, doc["epochs"])]
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"phases": phases}),
            "runtime": cfg.runtime.model_copy(update={"budget": None}),
        }
    )


def effective(cfg: Config) -> Config:
    """cfg with the run's decision applied when it has one for these epochs; else cfg as it is
    (its first fold to train decides)."""
    doc = read(cfg) if cfg.runtime.budget is not None else None
    return cfg if doc is None else applied(cfg, doc)


def describe(cfg: Config, doc: dict) -> str:
    before = "+".join(map(str, doc["configured_epochs"]))
    after = "+".join(map(str, doc["epochs"]))
    speed = f"{doc['img_per_s']:.0f} img/s" if doc["img_per_s"] else "a speed too high to time"
    head = f"runtime.budget {minutes(doc['budget_min'])}: at {speed}, {cfg.folds.n_folds} folds of {before} epochs"
    took = f"about {minutes(doc['configured_min'])}"
    if before == after:
        return f"{head} (by phase) take {took}: they fit as written ({path(cfg)})"
    return f"{head} (by phase) would take {took}; {after} fit, about {minutes(doc['estimate_min'])} ({path(cfg)})"


def minutes(m: float) -> str:
    return f"{m * 60:.1f} s" if m < 1.5 else f"{m:.1f} min"
