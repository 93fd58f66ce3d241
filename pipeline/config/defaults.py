"""The defaults that depend on the task: a number (regression, ordinal) scores, trains and smooths
differently from classes. They are filled into the raw document before validation, so they are
written into the resolved config and a run's config.yaml reads as it trained."""

from __future__ import annotations

from typing import Any

from .data import NUMERIC_TASKS

NUMBER_DEFAULT_LOSS = "mse"  # a number's train.loss when none is given (chosen by CV: docs/regression.md)


def task_of(doc: Any) -> str | None:
    """data.task of a raw document (a dict, or a Data already built), None when it names none."""
    data = doc.get("data") if isinstance(doc, dict) else None
    return data.get("task") if isinstance(data, dict) else getattr(data, "task", None)


def by_task(doc: Any) -> Any:
    """A number's defaults where the keys are not given: metric rmse (qwk for grades), loss mse, no
    label smoothing. Anything else comes back untouched."""
    task = task_of(doc)
    if task not in NUMERIC_TASKS:
        return doc
    doc = dict(doc)
    doc.setdefault("metric", "qwk" if task == "ordinal" else "rmse")
    if doc.get("train") is None or isinstance(doc.get("train"), dict):
        train = dict(doc.get("train") or {})
        train.setdefault("loss", NUMBER_DEFAULT_LOSS)
        train.setdefault("label_smoothing", 0.0)
        doc["train"] = train
    return doc
