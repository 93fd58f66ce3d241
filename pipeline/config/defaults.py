"""The defaults that depend on the task: a number (regression, ordinal) scores, trains and smooths
differently from classes, and several labels per image smooth differently from one. They are
filled into the raw document before validation, so they are written into the resolved config and
a run's config.yaml reads as it trained."""

from __future__ import annotations

from typing import Any

from .data import NUMERIC_TASKS

NUMBER_DEFAULT_LOSS = "mse"  # a number's train.loss when none is given (chosen by CV: docs/regression.md)
# A multi-label task's train.label_smoothing when none is given, chosen by CV on scenes (five tags,
# bench/multilabel-cv.md): 0 against 0.1 and 0.2, log-loss 0.206 / 0.224 / 0.261, the mean F2 per
# image 0.877 / 0.875 / 0.873, the mean F1 per image at its thresholds 0.851 all three.
MULTILABEL_LABEL_SMOOTHING = 0.0
RETRIEVAL_METRIC = "map@5"  # Happywhale's, Humpback Whale's, Hotel-ID's: five guesses per image
# A retrieval task's model.head when none is given, chosen by CV on the dogs set (docs/retrieval.md,
# bench/retrieval-cv.md): MAP@5 cross-fitted, linear 0.7625, arcface 0.7596, subcenter_arcface
# 0.7699, cosface 0.7639 (the folds' own spread is larger: a weak preference)
RETRIEVAL_HEAD = "subcenter_arcface"


def task_of(doc: Any) -> str | None:
    """data.task of a raw document (a dict, or a Data already built), None when it names none."""
    data = doc.get("data") if isinstance(doc, dict) else None
    return data.get("task") if isinstance(data, dict) else getattr(data, "task", None)


def by_task(doc: Any) -> Any:
    """A number's defaults where the keys are not given: metric rmse (qwk for grades), loss mse, no
    label smoothing; a multi-label task's: no label smoothing; a retrieval task's: map@5 and the
    sub-center ArcFace head. Anything else comes back untouched."""
    task = task_of(doc)
    if task == "retrieval" and (doc.get("model") is None or isinstance(doc.get("model"), dict)):
        model = {"head": RETRIEVAL_HEAD, **(doc.get("model") or {})}
        return {**doc, "metric": doc.get("metric", RETRIEVAL_METRIC), "model": model}
    if task == "multilabel" and (doc.get("train") is None or isinstance(doc.get("train"), dict)):
        return {**doc, "train": {"label_smoothing": MULTILABEL_LABEL_SMOOTHING, **(doc.get("train") or {})}}
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
