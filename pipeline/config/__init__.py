"""The settings of an experiment and of an ensemble: every key, its type, default and meaning.

This package is the schema alone. Here: the experiment (`Config`) and the ensemble file
(`Ensemble`), and every name the rest of pipeline/ imports from `pipeline.config`. The sections
live a module per part (data, model, train, stages, runtime; `_Section` in base); the rules that
check one section against another are rules.py, and the defaults that follow the task defaults.py.
Reading YAML files into it (inheritance, `key=value` overrides, error text) is `config_files.py`;
which keys each stage reads is `stamps.py`.
`python -m pipeline config --explain` prints every key with its default and description.
It must not import torch (nor albumentations): Make reads configs at parse time. Trying
train.aug.transforms is preflight's, before the first epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from . import defaults, rules
from .base import NAME, _Section
from .data import (
    CLASS_METRICS,
    MAP_METRICS,
    NUMBER_LOSSES,
    NUMBER_METRICS,
    NUMERIC_TASKS,
    SAMPLES_METRICS,
    Data,
    Folds,
    Metric,
)
from .defaults import NUMBER_DEFAULT_LOSS
from .model import OFFLINE_WEIGHTS, Model
from .runtime import Runtime
from .stages import Flip, Infer, LrFind, Mine, Pseudo, Tta
from .train import Aug, Ema, Fgm, Mixup, Phase, Swa, Train

__all__ = [
    "CLASS_METRICS", "MAP_METRICS", "NAME", "NUMBER_DEFAULT_LOSS", "NUMBER_LOSSES", "NUMBER_METRICS", "NUMERIC_TASKS",
    "SAMPLES_METRICS", "OFFLINE_WEIGHTS", "Aug", "Config", "Data", "Ema", "Ensemble", "Fgm", "Flip", "Folds",
    "Infer", "LrFind", "Method", "Metric", "Mine", "Mixup", "Model", "Phase", "Pseudo", "Runtime", "Swa", "Train",
    "Tta",
]  # fmt: skip

Method = Literal["mean", "fit", "rank", "median", "vote", "hierarchical"]


class Config(_Section):
    """One experiment: a backbone and recipe on a competition. Outputs go to runs/<name>/."""

    name: str = Field(pattern=NAME, description="experiment name: runs/<name>/, submissions/<name>.csv")
    runs_dir: str = Field("runs", description="where experiment folders live")
    metric: Metric = Field(
        "accuracy",
        description="the competition's metric: CV is reported with it, and ensemble weights are fitted to it",
    )
    data: Data = Field(description="the competition")
    model: Model = Field(description="the backbone")
    train: Train = Field(Train(), description="training")
    folds: Folds = Field(Folds(), description="the split")
    infer: Infer = Field(Infer(), description="inference")
    lr_find: LrFind = Field(LrFind(), description="the LR range test")
    mine: Mine = Field(Mine(), description="hard-negative mining")
    pseudo: Pseudo = Field(Pseudo(), description="pseudo-labels")
    runtime: Runtime = Field(Runtime(), description="device and speed; never makes outputs stale")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, doc):
        """The task's defaults where the keys are not given (defaults.py), before any section is built."""
        return defaults.by_task(doc)

    @model_validator(mode="after")
    def _sections_agree(self):
        """The rules across sections (rules.py), in this order: the first one broken is the error."""
        rules.metric_fits_task(self.metric, self.data)
        rules.loss_fits_classes(self.data, self.train)
        rules.number_fits(self.data, self.train, self.model, self.infer)
        rules.multilabel_fits(self.metric, self.data, self.train)
        rules.retrieval_fits(self.data, self.train, self.model, self.infer)
        rules.negatives_named(self.data, self.train)
        rules.lr_find_in_range(self.lr_find, self.train, self.folds)
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def folds_file(self) -> Path:
        return Path(self.folds.dir) / f"{self.data.competition}.csv"


# ----------------------------------------------------------------------------- an ensemble


class Ensemble(_Section):
    """An ensemble file (make ensemble ENSEMBLE=ensembles/x.yaml): members and how to combine them."""

    name: str = Field(pattern=NAME, description="submissions/<name>.csv and <name>.json")
    members: list[str] = Field(min_length=1, description="experiment configs, or runs/<name> folders")
    method: Method = Field(
        "mean", description="mean | fit | rank | median (numbers) | vote | hierarchical (pipeline/blend.py)"
    )
    weights: list[float] | None = Field(None, description="mean only: one non-negative weight per member")
    metric: Metric | None = Field(None, description="null: the members' metric")
    calibrate: Literal["auto", "on", "off"] = Field(
        "auto", description="temperature scaling of the blend, fitted on its OOF; auto: on when the metric is log_loss"
    )
    out_dir: str = Field("submissions", description="where the submission and its JSON go")

    @field_validator("weights")
    @classmethod
    def _weights_fit(cls, weights, info):
        members, method = info.data.get("members", []), info.data.get("method")
        if weights is None:
            return weights
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"one non-negative weight per member ({len(members)}), not all zero")
        if method != "mean":
            raise ValueError("only method mean takes fixed weights")
        return weights
