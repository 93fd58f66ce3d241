"""The rules that check one section against another (the metric and the losses against the task,
lr_find against the phases and folds). No section can check them alone; Config runs them, in this
order, after each section has passed its own checks. Each raises ValueError naming the key."""

from __future__ import annotations

from .data import MAP_METRICS, NUMBER_LOSSES, NUMBER_METRICS, SAMPLES_METRICS, Data, Folds
from .model import Model
from .stages import Infer, LrFind
from .train import Train


def metric_fits_task(metric: str, data: Data) -> None:
    """A number's metric for a number (qwk only for grades), a class metric for classes."""
    if metric in SAMPLES_METRICS and not data.multilabel:
        raise ValueError(f"metric: {metric} is the mean F-beta per image of several labels (data.task multilabel)")
    if data.retrieval and metric not in MAP_METRICS:
        raise ValueError(f"metric: {metric} does not score k guesses per image (data.task retrieval); map@5, say")
    if metric in MAP_METRICS and data.task not in ("multiclass", "retrieval"):
        raise ValueError(f"metric: {metric} scores k guesses of one label per image (data.task multiclass, retrieval)")
    if not data.numeric:
        if metric in ("rmse", "mae", "r2"):
            raise ValueError(f"metric: {metric} scores a number (data.task regression or ordinal)")
        return
    if metric not in NUMBER_METRICS or (metric == "qwk" and not data.ordinal):
        want = "rmse, mae, r2" + (", qwk" if data.ordinal else "")
        raise ValueError(f"metric: {metric} does not score a number (data.task {data.task}); {want}")


def loss_fits_classes(data: Data, train: Train) -> None:
    if not data.numeric and train.loss in NUMBER_LOSSES:
        raise ValueError(f"train.loss: {train.loss} is for a number (data.task regression or ordinal); ce or focal")


def number_fits(data: Data, train: Train, model: Model, infer: Infer) -> None:
    """What means nothing for a number is refused, naming the key."""
    if not data.numeric:
        return
    t = train
    refusals = [
        ("train.loss", t.loss not in NUMBER_LOSSES, f"{t.loss} is for classes; mse, l1, smooth_l1 or bce"),
        ("train.loss", t.loss == "bce" and model.y_range is None, "bce needs model.y_range (a range to scale to)"),
        ("train.label_smoothing", t.label_smoothing > 0, "smooths class targets; leave it 0"),
        ("train.class_weights", t.class_weights is not None, "weights classes; use train.sampling"),
        ("train.monitor", t.monitor == "accuracy", "accuracy has no meaning; loss, metric or last"),
        ("infer.calibrate", infer.calibrate == "on", "scales probabilities; leave it auto or off"),
        ("infer.tta.merge", infer.tta.merge in ("gmean", "max"), "merges probabilities; mean or median"),
        ("data.negative_class", data.negative_class is not None, "names a class; a number has none"),
        ("train.hard_negatives_from", t.hard_negatives_from is not None, "mines a class's negatives; none"),
    ]
    for key, bad, why in refusals:
        if bad:
            raise ValueError(f"{key}: {why} for a number (data.task {data.task})")


def multilabel_fits(metric: str, data: Data, train: Train) -> None:
    """What needs one label per image is refused for several, and what means several for one."""
    if data.task != "multilabel":
        if data.empty_labels is not None:
            raise ValueError("data.empty_labels: says whether an image may get no label (data.task multilabel)")
        return
    if train.sampling != "none":
        raise ValueError("train.sampling: oversampling needs one label per image (data.task multiclass)")
    if metric == "qwk":
        raise ValueError("metric: qwk needs one ordered label per image (data.task multiclass)")
    if train.class_weights is not None:
        raise ValueError("train.class_weights needs one label per image (data.task multiclass)")


def retrieval_fits(data: Data, train: Train, model: Model, infer: Infer) -> None:
    """A margin head needs classes, one per image; what reads a class's probability means nothing
    for individuals ranked by similarity. Each refusal names its key."""
    if model.margin_head and data.task not in ("multiclass", "retrieval"):
        raise ValueError(f"model.head: {model.head} needs one class per image (data.task multiclass or retrieval)")
    if not data.retrieval:
        if data.new_individual != "new_individual":
            raise ValueError("data.new_individual: names the answer for an unseen individual (data.task retrieval)")
        return
    refusals = [
        ("data.negative_class", data.negative_class is not None, "names a class a detector must not fire on"),
        ("train.hard_negatives_from", train.hard_negatives_from is not None, "mines a class's false positives"),
        ("train.pseudo_labels_from", train.pseudo_labels_from is not None, "labels test images by a class"),
        ("infer.calibrate", infer.calibrate == "on", "scales probabilities; similarities are not"),
        ("infer.tta.merge", infer.tta.merge != "mean", "merges probabilities; embeddings are averaged (mean)"),
        ("train.sampling", train.sampling != "none", "oversamples classes; individuals have a few images each"),
    ]
    for key, bad, why in refusals:
        if bad:
            raise ValueError(f"{key}: {why} (data.task retrieval)")


def negatives_named(data: Data, train: Train) -> None:
    if train.neg_fraction < 1.0 and data.negative_class is None:
        raise ValueError("train.neg_fraction < 1 needs data.negative_class (which images to sample)")


def lr_find_in_range(lr_find: LrFind, train: Train, folds: Folds) -> None:
    if lr_find.phase >= len(train.phases):
        raise ValueError(f"lr_find.phase {lr_find.phase}: train has {len(train.phases)} phases")
    if lr_find.fold >= folds.n_folds:
        raise ValueError(f"lr_find.fold {lr_find.fold}: there are {folds.n_folds} folds")
