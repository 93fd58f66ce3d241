"""Stage 5: combine one or more experiments into submissions/<name>.csv.

Usage: python -m pipeline ensemble RUN [RUN ...] [--name NAME] [--method M] [--weights W,W] [--out-dir DIR]
       python -m pipeline ensemble --spec ensembles/x.yaml      (make ensemble [ENSEMBLE=...])

RUN is an experiment folder (runs/<name>, holding config.yaml, oof.csv, test.csv and
test_fold<k>.csv) or its config file. An ensemble file (config.Ensemble) names the members,
the method and its weights.

It prints each member's CV per fold and overall, and the ensemble's CV under every method, each
computed on the OOF predictions by the rule that makes the test prediction (pipeline/blend.py);
for a log-loss metric only the methods whose output is a probability (mean, fit), and the blend is
then temperature-scaled on its OOF (calibrate: auto; pipeline/calibrate.py).
For a number (data.task regression or ordinal) the members' numbers are blended (mean, fit,
rank, median); an ordinal task's blend is then graded by cut-points fitted on its OOF, and every
row of the CV table is scored so, each fold's rows at the other folds' cut-points (pipeline/ordinal.py).
It writes the chosen method's submission, in the layout of sample_submission.csv and checked
against it (pipeline/submission.py), a JSON with the members, method, weights and CV, and an HTML
page of the same with the correlation of the members' OOF predictions (ensemble_page).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import blend, calibrate, ordinal, pages, retrieval, thresholds
from ..config import MAP_METRICS, NUMBER_METRICS, SAMPLES_METRICS
from ..config_files import load_ensemble
from ..errors import PipelineError
from ..io import write_csv, write_text
from ..labels import grades, y_true
from ..metrics import k_of, per_fold, score
from ..submission import (
    build_guesses,
    build_numbers,
    build_submission,
    check_guesses,
    check_numbers,
    check_submission,
    read_sample,
)
from ..upstream import Predictions, check_compatible, read_predictions


def cv_table(members: list[Predictions], y: np.ndarray, folds: np.ndarray, metric: str, methods) -> pd.DataFrame:
    """One row per member and per ensemble method: the metric on each fold and overall (an
    ordinal task's after cross-fitted cut-points, as its submission is graded). A fitted method's
    row is cross-fitted (blend.combine); a row below it, labelled in-sample, scores the weights
    fitted on every row on those same rows, the figure that flatters."""
    classes, d = members[0].classes, members[0].cfg.data
    g = np.unique(y) if d.ordinal else None

    def cv(oof):
        graded = ordinal.fit(y, oof, folds, g, metric)[0] if d.ordinal else oof
        return per_fold(metric, y, graded, folds, g)

    rows = [{"model": m.cfg.name, **cv(m.oof[classes].to_numpy())} for m in members]
    for name, (oof, _, w) in methods.items():
        rows.append({"model": f"ensemble: {name}", **cv(oof)})
        if name == "fit" and len(members) > 1:
            stack = np.stack([m.oof[classes].to_numpy() for m in members])
            rows.append({"model": f"ensemble: {name} (in-sample)", **cv(blend.weighted_mean(stack, w))})
    return pd.DataFrame(rows)


def combine_all(members: list[Predictions], y: np.ndarray, folds: np.ndarray, metric: str, weights, methods) -> dict:
    """Each method's (OOF, test, weights), the test rows in the first member's order; a fitted
    method's OOF cross-fitted over `folds`."""
    d, classes = members[0].cfg.data, members[0].classes
    ids = members[0].test[d.id_col]
    oofs = np.stack([m.oof[classes].to_numpy() for m in members])
    tests = np.stack([m.test.set_index(d.id_col).loc[ids, classes].to_numpy() for m in members])
    return {
        meth: blend.combine(
            meth, oofs, tests, [m.test_folds for m in members], y, metric, weights if meth == "mean" else None, folds
        )
        for meth in methods
    }


def label_thresholds(y: np.ndarray, oof_probs: np.ndarray, folds: np.ndarray, d, metric: str) -> thresholds.Choice:
    """Multi-label: thresholds tuned for the metric and chosen cross-fitted (pipeline/thresholds.py);
    an empty set of labels only where data.empty_labels allows it (null: where train.csv has one)."""
    empty = d.empty_labels if d.empty_labels is not None else bool((np.asarray(y).sum(1) == 0).any())
    return thresholds.choose(y, oof_probs, folds, metric, empty)


def write_submission(first: Predictions, test_probs: np.ndarray, labels, path: Path) -> pd.DataFrame:
    """The submission in the sample's layout, checked against the sample, then written; the ids
    under the sample's id column (data.sample_id_col), the run's files keeping data.id_col. A number
    per id for a regression; an ordinal task's grade (test_probs: graded) as train.csv spells it."""
    d, classes = first.cfg.data, first.classes
    sample_path = d.path(d.sample_submission)
    sample, sid, form = read_sample(d), d.sample_id, d.submission_classes
    test = pd.concat(
        [pd.DataFrame({sid: first.test[d.id_col].to_numpy()}), pd.DataFrame(test_probs, columns=classes)], axis=1
    )
    if d.numeric:
        values, spelled = grades(first.oof[d.label_col]) if d.ordinal else (None, None)
        sub = build_numbers(sample, test, sid, sample_path, dict(zip(values, spelled)) if d.ordinal else None)
        check_numbers(sub, sample, sid, sample_path, spelled)
        write_csv(path, sub)
        return sub
    cut, empty = (None, True) if labels is None else (labels.thresholds, labels.empty_allowed)
    sub = build_submission(sample, test, classes, sid, sample_path, d.negative_class, cut, d.label_sep, form, empty)
    check_submission(sub, sample, classes, sid, sample_path, d.negative_class, d.sep, form)
    write_csv(path, sub)
    return sub


def main(
    runs: list[str | Path],
    name: str | None = None,
    out_dir: str | Path = "submissions",
    method: str = "mean",
    weights=None,
    metric: str | None = None,
    calibrate_setting: str = "auto",
) -> pd.DataFrame:
    """Blend the members, print the CV table, write the submission and its JSON. calibrate_setting:
    temperature scaling of the blend (auto: for a log-loss metric), pipeline/calibrate.py."""
    members = [read_predictions(r) for r in runs]
    check_compatible(members)
    first, d = members[0], members[0].cfg.data
    classes, metric = first.classes, metric or first.cfg.metric
    if d.retrieval:
        return retrieval_main(members, name, out_dir, method, weights, metric)
    check_number_rule(d, metric, calibrate_setting)
    y, folds = y_true(first.oof[d.label_col], classes, d), first.oof["fold"].astype(int).to_numpy()
    methods = blend.allowed_methods(method, metric, d.multilabel, d.numeric)
    results = combine_all(members, y, folds, metric, weights, methods)
    table = cv_table(members, y, folds, metric, results)
    print(
        f"CV {metric} per fold and overall (ensembles on OOF, by the rule that makes their test prediction; "
        "fitted ones cross-fitted: each fold's rows by what the other folds' rows fitted):"
    )
    print(table.to_string(index=False, float_format="%.4f"))
    oof_probs, test_probs, w = results[method]
    cv = {row["model"]: row["overall"] for _, row in table.iterrows()}
    report = None
    if calibrate.wanted(calibrate_setting, metric):
        oof_probs, test_probs, report = calibrate.calibrate(y, oof_probs, test_probs, folds, d.multilabel, metric)
        print(calibrate.describe(report))
        cv[f"ensemble: {method}"] = score(metric, y, oof_probs)
    cuts = None
    if d.ordinal:
        oof_probs, cuts = ordinal.fit(y, oof_probs, folds, np.unique(y), metric)
        test_probs = ordinal.cut(test_probs, cuts["cuts"], cuts["grades"])[:, None]
        print(ordinal.describe(cuts))
    labels = label_thresholds(y, oof_probs, folds, d, metric) if d.multilabel else None
    if labels is not None:
        print(labels.describe(classes))
        cv[f"ensemble: {method} at its thresholds ({labels.metric})"] = labels.cross_fitted[labels.way]
        cv[f"ensemble: {method} at its thresholds ({labels.metric}, in-sample)"] = labels.in_sample
    name = name or (first.cfg.name if len(members) == 1 else "ensemble")
    path = Path(out_dir) / f"{name}.csv"
    sub = write_submission(first, test_probs, labels, path)
    write_text(path.with_suffix(".json"), summary(name, members, method, metric, w, cv, labels, report, cuts))
    write_text(path.with_suffix(".html"), ensemble_page(name, members, table, method, w, classes))
    final = f"ensemble: {method}"
    if labels is not None and labels.metric == metric:  # the submission's labels: scored at its thresholds
        final = f"ensemble: {method} at its thresholds ({metric})"
    print(f"{name}: {method} of {len(members)}: CV {metric} {cv[final]:.4f} -> {path}")
    return sub


# ---- retrieval: similarities averaged, the new-individual threshold, k guesses per image -------------


def retrieval_main(members: list[Predictions], name, out_dir, method: str, weights, metric: str) -> pd.DataFrame:
    """A retrieval task's ensemble: the members' similarity tables combined, the new-individual
    threshold fitted on the blend's OOF (its CV cross-fitted), each test image's k guesses."""
    first, d = members[0], members[0].cfg.data
    methods = blend.allowed_methods(method, metric, False, False, retrieval=True)
    if metric not in MAP_METRICS:
        raise PipelineError(f"ensemble metric {metric}: a retrieval task is scored by map@k (its k guesses)")
    classes, k, new = first.classes, k_of(metric), d.new_individual is not None
    y, folds = y_true(first.oof[d.label_col], classes, d), first.oof["fold"].astype(int).to_numpy()
    results = combine_all(members, y, folds, metric, weights, methods)
    rows = [(m.cfg.name, m.oof[classes].to_numpy()) for m in members]
    rows += [(f"ensemble: {meth}", oof) for meth, (oof, _, _) in results.items()]
    choices = {who: retrieval.choose(y, oof, folds, k, new) for who, oof in rows}
    table = pd.DataFrame(
        [{"model": who, **c.per_fold, "overall": c.cross_fitted, "in_sample": c.in_sample, "without_new": c.without_new}
         for who, c in choices.items()]
    )  # fmt: skip
    print(f"CV {metric} per fold and overall (the '{d.new_individual}' threshold cross-fitted; in-sample beside it):")
    print(table.to_string(index=False, float_format="%.4f"))
    choice = choices[f"ensemble: {method}"]
    print(choice.describe(d.new_individual))
    _, test_table, w = results[method]
    cells = retrieval.spell(retrieval.decode(test_table, k, choice.threshold), classes, d.new_individual)
    sample, path = (
        read_sample(d),
        Path(out_dir) / f"{name or (first.cfg.name if len(members) == 1 else 'ensemble')}.csv",
    )
    sub = build_guesses(sample, first.test[d.id_col], cells, d.sample_id, d.path(d.sample_submission))
    known = set(classes) | ({d.new_individual} if new else set())
    check_guesses(sub, sample, d.sample_id, d.path(d.sample_submission), known, k)
    write_csv(path, sub)
    cv = {row["model"]: row["overall"] for _, row in table.iterrows()}
    cv |= {f"{who} (in-sample)": c.in_sample for who, c in choices.items() if who.startswith("ensemble")}
    doc = json.loads(summary(path.stem, members, method, metric, w, cv, None, None, None))
    doc |= {"new_individual": d.new_individual, "new_threshold": choice.threshold, "new_alone": choice.new_everywhere}
    write_text(path.with_suffix(".json"), json.dumps(doc, indent=1) + "\n")
    print(f"{path.stem}: {method} of {len(members)}: CV {metric} {choice.cross_fitted:.4f} -> {path}")
    return sub


def summary(name: str, members: list, method: str, metric: str, w, cv: dict, labels, report, cuts) -> str:
    """submissions/<name>.json: the members, the method and its weights, every CV figure (the
    in-sample ones labelled so), a multi-label task's thresholds, the calibration, the cut-points."""
    classes = members[0].classes
    doc = {
        "name": name,
        "members": [str(m.run) for m in members],
        "method": method,
        "metric": metric,
        "weights": None if w is None else [float(x) for x in w],
        "cv": cv,
        "thresholds": None if labels is None else dict(zip(classes, map(float, labels.thresholds))),
        "thresholds_way": None if labels is None else labels.way,
        "empty_labels": None if labels is None else labels.empty_allowed,
        "calibration": report,
        "cut_points": cuts,
    }
    return json.dumps(doc, indent=1) + "\n"


def check_number_rule(d, metric: str, calibrate_setting: str) -> None:
    """A number's ensemble: a metric that scores numbers, and no calibration (no probabilities); a
    mean F-beta per image only for several labels per image."""
    if metric in SAMPLES_METRICS and not d.multilabel:
        raise PipelineError(
            f"ensemble metric {metric}: the mean F-beta per image of several labels (data.task multilabel)"
        )
    if not d.numeric:
        return
    if metric not in NUMBER_METRICS or (metric == "qwk" and not d.ordinal):
        raise PipelineError(f"ensemble metric {metric}: does not score a number (data.task {d.task})")
    if calibrate_setting == "on":
        raise PipelineError(f"ensemble calibrate: on scales probabilities; a number (data.task {d.task}) has none")


def ensemble_page(name: str, members: list, cv: pd.DataFrame, method: str, w, classes: list[str]) -> str:
    """submissions/<name>.html: the CV of each member and method per fold, the members' weights,
    and how alike the members' OOF predictions are (the correlation of their probabilities: the
    lower, the more an ensemble can gain)."""
    from ..plots import correlation_png  # matplotlib only when a page is written

    names = [m.cfg.name for m in members]
    flat = np.stack([m.oof[classes].to_numpy(dtype=float).ravel() for m in members])
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant member has no correlation: n/a
        corr = np.corrcoef(flat) if len(members) > 1 else np.ones((1, 1))
    weights = pd.DataFrame(
        {"member": names, "backbone": [m.cfg.model.backbone for m in members], "weight": w if w is not None else np.nan}
    )
    parts = [
        f"<h1>{pages.esc(name)}</h1><p>{pages.esc(method)} of {len(members)} members</p>",
        "<h2>CV per fold</h2>" + pages.table(cv),
        f"<h2>Members and weights ({pages.esc(method)})</h2>" + pages.table(weights),
        "<h2>Correlation of the members' OOF probabilities</h2>"
        + pages.img_tag(correlation_png(corr, names, "OOF correlation"), "correlation"),
    ]
    return pages.page(name, parts)


def run_cli(args) -> None:
    """From the command line: an ensemble file, or members named with --method/--weights."""
    if args.spec:
        if args.runs:
            raise PipelineError("ensemble: give members in the ensemble file or on the command line, not both")
        spec = load_ensemble(args.spec)
        main(spec.members, spec.name, spec.out_dir, spec.method, spec.weights, spec.metric, spec.calibrate)
        return
    if not args.runs:
        raise PipelineError("ensemble: name at least one experiment (or --spec FILE)")
    if args.method not in blend.METHODS:
        raise PipelineError(f"ensemble --method {args.method}: expected one of {', '.join(blend.METHODS)}")
    weights = blend.parse_weights(args.weights, len(args.runs)) if args.weights else None
    main(args.runs, args.name, args.out_dir, args.method, weights, calibrate_setting=args.calibrate)
