"""The run report: one self-contained HTML page per experiment, images embedded, that opens
offline and can be attached to a discussion post.

Usage: python -m pipeline report CONFIG [key=value ...]      (make report)

runs/<name>/report.html holds: the per-fold CV table in the competition's metric, the TTA table,
the calibration, each fold's loss and accuracy curves (phase boundaries, the kept epoch), the
LR-finder plot when one was run, the OOF confusion matrix with per-class precision and recall,
the most confidently wrong OOF images as thumbnails with their true and predicted classes, the
hard-negative and pseudo-label tables when those stages ran, and the resolved config. For a number
(data.task regression or ordinal) the errors section is the OOF predictions against the truth (a
scatter), the error by target range, and the images with the largest errors, true and predicted;
an ordinal task's CV is after its cut-points (cross-fitted, as infer reports it). For a retrieval
task, the CV with the new-individual threshold cross-fitted, and the most confidently wrong OOF
queries beside their k guesses, each an image of the guessed individual from the searched gallery.
"""

from __future__ import annotations

import html
import json

import cv2
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .. import ordinal, pages, retrieval
from ..config import Config
from ..config_files import to_yaml
from ..data import read_image
from ..io import write_text
from ..labels import bin_edges, quantile_bins, y_true
from ..metrics import k_of, per_fold
from ..plots import confusion_png, scatter_png
from ..runs import RunDir
from ..upstream import oof_scores, read_predictions

WRONG = 12  # thumbnails of the most confidently wrong OOF images


def thumbnail(path, size: int = 112) -> bytes:
    img = read_image(path)
    scale = size / max(img.shape[:2])
    img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))))
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def figure(cfg: Config, image_id: str, caption: str) -> str:
    d = cfg.data
    png = thumbnail(d.path(d.train_images.format(id=image_id)))
    return f"<figure>{pages.img_tag(png, image_id)}<figcaption>{caption}</figcaption></figure>"


# More classes than this: the confusion matrix shows those with the most errors, the table the worst first.
MATRIX_CLASSES = 25


def confusion_view(cm: np.ndarray, classes: list[str]) -> tuple[np.ndarray, list[str], str]:
    """The confusion matrix to draw, its classes and title: all of them up to MATRIX_CLASSES, else
    the MATRIX_CLASSES classes with the most errors (as the true or the predicted class), in order."""
    if len(classes) <= MATRIX_CLASSES:
        return cm, classes, "OOF confusion matrix"
    errors = cm.sum(0) + cm.sum(1) - 2 * np.diag(cm)
    shown = np.sort(np.argsort(-errors, kind="stable")[:MATRIX_CLASSES])
    title = f"OOF confusion among the {MATRIX_CLASSES} classes with the most errors (of {len(classes)})"
    return cm[np.ix_(shown, shown)], [classes[i] for i in shown], title


def errors_section(cfg: Config, oof: pd.DataFrame, classes: list[str], y: np.ndarray) -> str:
    """Confusion matrix, per-class precision and recall, and the most confidently wrong images."""
    d, probs = cfg.data, oof[classes].to_numpy()
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, labels=range(len(classes)))
    p, r, f, n = precision_recall_fscore_support(y, pred, labels=range(len(classes)), zero_division=0)
    per_class = pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "images": n})
    if len(classes) > MATRIX_CLASSES:  # the worst first
        per_class = per_class.sort_values(["f1", "images"], ascending=[True, False])
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:WRONG]
    cells = []
    for i in wrong:
        row = oof.iloc[i]
        caption = (
            f"{html.escape(str(row[d.id_col]))}<br>true {html.escape(classes[y[i]])} "
            f"({probs[i, y[i]]:.2f})<br>predicted {html.escape(classes[pred[i]])} ({probs[i, pred[i]]:.2f})"
        )
        cells.append(figure(cfg, str(row[d.id_col]), caption))
    return (
        "<h2>Errors (OOF)</h2>"
        + pages.img_tag(confusion_png(*confusion_view(cm, classes)), "confusion matrix")
        + pages.table(per_class)
        + f"<h3>The {len(cells)} most confidently wrong</h3><div class='grid'>{''.join(cells) or 'none'}</div>"
    )


def error_by_range(y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """The OOF error in each quantile bin of the true value: where the model is off, and which way."""
    bins = quantile_bins(y, edges=bin_edges(y))
    rows = []
    for b in np.unique(bins):
        t, p = y[bins == b], pred[bins == b]
        rows.append(
            {
                "true from": t.min(),
                "true to": t.max(),
                "images": len(t),
                "mean true": t.mean(),
                "mean predicted": p.mean(),
                "bias": (p - t).mean(),
                "mae": np.abs(p - t).mean(),
                "rmse": np.sqrt(((p - t) ** 2).mean()),
            }
        )
    return pd.DataFrame(rows)


def number_errors_section(cfg: Config, oof: pd.DataFrame, y: np.ndarray) -> str:
    """A number's OOF: predicted against true, the error by target range, the largest errors."""
    d, pred = cfg.data, oof["prediction"].to_numpy(dtype=float)
    worst = np.argsort(-np.abs(pred - y), kind="stable")[:WRONG]
    cells = [
        figure(
            cfg,
            str(oof[d.id_col].iloc[i]),
            f"{html.escape(str(oof[d.id_col].iloc[i]))}<br>true {y[i]:.4g}<br>predicted {pred[i]:.4g}",
        )
        for i in worst
    ]
    return (
        "<h2>Errors (OOF)</h2>"
        + pages.img_tag(scatter_png(y, pred, "OOF predicted against true"), "OOF predicted against true")
        + "<h3>Error by target range</h3>"
        + pages.table(error_by_range(y, pred))
        + f"<h3>The {len(cells)} largest errors</h3><div class='grid'>{''.join(cells)}</div>"
    )


QUERIES = 8  # a retrieval task's OOF queries shown with their guesses


def gallery_image(oof: pd.DataFrame, d, individual: str, fold: int) -> str | None:
    """An image of the individual that the query's fold model searched (a training row of another fold)."""
    rows = oof[(oof[d.label_col] == individual) & (oof["fold"] != fold)]
    return None if rows.empty else str(rows[d.id_col].iloc[0])


def retrieval_section(cfg: Config, oof: pd.DataFrame, classes: list[str], y: np.ndarray) -> str:
    """The most confidently wrong OOF queries (then the least confident right), each beside its k
    guesses (an image of each guessed individual from the gallery it was searched in, with the
    similarity; the new-individual answer at the threshold fitted on every OOF row), and the CV."""
    d, k, table = cfg.data, k_of(cfg.metric), oof[classes].to_numpy()
    folds = oof["fold"].astype(int).to_numpy()
    choice = retrieval.choose(y, table, folds, k, d.new_individual is not None)
    truth, guesses = retrieval.truth(y, table), retrieval.decode(table, k, choice.threshold)
    wrong, right = np.flatnonzero(guesses[:, 0] != truth), np.flatnonzero(guesses[:, 0] == truth)
    shown = np.concatenate([wrong[np.argsort(-table[wrong].max(1))], right[np.argsort(table[right].max(1))]])
    rows = []
    for i in shown[:QUERIES]:
        row, want = oof.iloc[i], classes[truth[i]] if truth[i] >= 0 else d.new_individual
        cells = [
            figure(cfg, str(row[d.id_col]), f"query {html.escape(str(row[d.id_col]))}<br>true {html.escape(str(want))}")
        ]
        for g in guesses[i]:
            if g < 0:
                cells.append(f"<figure><figcaption>{html.escape(str(d.new_individual))}</figcaption></figure>")
                continue
            image = gallery_image(oof, d, classes[g], int(row["fold"]))
            caption = f"{html.escape(classes[g])}<br>{table[i, g]:.3f}" + (" (right)" if g == truth[i] else "")
            cells.append(
                figure(cfg, image, caption) if image else f"<figure><figcaption>{caption}</figcaption></figure>"
            )
        rows.append(f"<div class='grid'>{''.join(cells)}</div>")
    return (
        f"<h2>Retrieval (OOF)</h2><p>{html.escape(choice.describe(d.new_individual))}</p>"
        f"<h3>{len(rows)} queries and their {k} guesses: the most confidently wrong first ({len(wrong)} in all), "
        f"then the least confident right</h3>{''.join(rows)}"
    )


def section_of_errors(cfg: Config, oof: pd.DataFrame, classes: list[str], y: np.ndarray) -> str:
    """The task's errors section: a number's, a class's, none for several labels per image."""
    if cfg.data.retrieval:
        return retrieval_section(cfg, oof, classes, y)
    if cfg.data.numeric:
        return number_errors_section(cfg, oof, y)
    return "" if cfg.data.multilabel else errors_section(cfg, oof, classes, y)


def optional_tables(run: RunDir) -> str:
    """The TTA table, calibration, cut-points, hard negatives and pseudo-labels, for those that exist."""
    out = []
    if run.tta.is_file():
        out.append("<h2>TTA</h2>" + pages.table(pd.read_csv(run.tta)))
    if run.calibration.is_file():
        out.append(f"<h2>Calibration</h2><pre>{html.escape(run.calibration.read_text())}</pre>")
    if run.cutpoints.is_file():
        out.append(f"<h2>Cut-points</h2><pre>{html.escape(run.cutpoints.read_text())}</pre>")
    for title, path in (("Hard negatives", run.hard_negatives), ("Pseudo-labels", run.pseudo_labels)):
        if path.is_file():
            df = pd.read_csv(path)
            out.append(f"<h2>{title} ({len(df)} rows)</h2>" + pages.table(df.head(30)))
    return "".join(out)


def curves_section(cfg: Config, run: RunDir) -> str:
    out = []
    if run.batch.is_file():  # make show-batch's picture
        out.append("<h2>What the model sees</h2>" + pages.img_tag(run.batch.read_bytes(), "training batches"))
    out.append("<h2>Training curves</h2>")
    for k in range(cfg.folds.n_folds):
        if run.curves(k).is_file():
            out.append(pages.img_tag(run.curves(k).read_bytes(), f"fold {k} curves"))
    lr_png = run.lr_find.with_suffix(".png")
    if lr_png.is_file():
        out.append("<h2>LR range test</h2>" + pages.img_tag(lr_png.read_bytes(), "LR range test"))
    return "".join(out)


def main(cfg: Config) -> str:
    """Write runs/<name>/report.html from the experiment's artifacts (make infer first)."""
    run, d = RunDir(cfg.run_dir), cfg.data
    pred = read_predictions(run.root)
    oof, classes = pred.oof, pred.classes
    y, folds = y_true(oof[d.label_col], classes, d), oof["fold"].astype(int).to_numpy()
    scored, grades = oof[classes].to_numpy(), (np.unique(y) if d.ordinal else None)
    if d.ordinal:  # graded as infer reports it: each fold's rows at the other folds' cut-points
        scored = ordinal.fit(y, scored, folds, grades, cfg.metric)[0]
    cv = oof_scores(cfg, oof, similarities=True) if d.retrieval else per_fold(cfg.metric, y, scored, folds, grades)
    parts = [
        f"<h1>{html.escape(cfg.name)}</h1><p>{html.escape(cfg.model.backbone)}, {cfg.folds.n_folds} folds, "
        f"{len(oof)} training images, {len(pred.test)} test images</p>",
        f"<h2>CV ({html.escape(cfg.metric)})</h2>" + pages.table(pd.DataFrame([cv])),
        optional_tables(run),
        curves_section(cfg, run),
        section_of_errors(cfg, oof, classes, y),
        f"<h2>Config</h2><pre>{html.escape(to_yaml(cfg))}</pre>",
    ]
    if run.provenance.is_file():
        parts.append(
            f"<h2>Provenance</h2><pre>{html.escape(json.dumps(json.loads(run.provenance.read_text()), indent=1))}</pre>"
        )
    page = pages.page(cfg.name, parts)
    write_text(run.report, page)
    print(f"{run.report}: {len(page) // 1024} KiB, {page.count('<img ')} images")
    return page
