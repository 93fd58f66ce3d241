"""Stage 3: test and out-of-fold probabilities from every fold's best checkpoint, with TTA.

Usage: python -m pipeline infer CONFIG [key=value ...]      (make infer)

Each fold's model predicts the test images and its own validation fold under every view of
infer.tta (sizes x crops x flips), merged as infer.tta.merge says. Writes runs/<name>/:
  test_fold<K>.csv  fold K's test probabilities
  test.csv          the mean over folds (what ensemble reads)
  oof.csv           out-of-fold probabilities under the same TTA, in the folds file's order
  tta.csv           CV accuracy and log-loss (and false-positive rate, with data.negative_class)
                    with no TTA, with each view set, and with all
  calibration.json  with infer.calibrate (auto: a log-loss metric): the temperature fitted on the
                    OOF and the OOF log-loss before and after (pipeline/calibrate.py); oof.csv and
                    test.csv then hold the calibrated probabilities
  cutpoints.json    an ordinal task's cut-points between grades, fitted on the OOF (pipeline/ordinal.py);
                    the CV printed grades each fold's rows by the other folds' cut-points
A retrieval task's files hold similarities, not probabilities: a column per individual, each
image's best cosine with that individual's training images (embeddings under the same TTA,
averaged, to unit length); for the test, every training image is the gallery; for a fold's
validation rows, that fold's training rows alone (an individual it never saw: retrieval.ABSENT).
For a number (data.task regression or ordinal) every file holds one column, prediction, in the
target's units; an ordinal task's grades are made from it by ensemble, with the cut-points.
Models are rebuilt from their checkpoints alone. The test images and each fold's validation
images go through the model in separate batches, so a bundle's test-only run (main(test_only=True),
python -m pipeline predict) computes the very same test probabilities.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pandas as pd

from .. import calibrate, engine, heads, ordinal, retrieval, tta
from ..cache import run_cache
from ..competition import read_competition, read_gallery
from ..config import Config
from ..errors import PipelineError
from ..io import image_paths, read_table, write_csv, write_text
from ..labels import prob_frame, y_true
from ..metrics import accuracy, false_positive_rate, k_of, log_loss, mae, per_fold, rmse, score
from ..models import load_fold_model
from ..preflight import check_competition
from ..runs import RunDir
from ..stamps import differences, recorded


def check_trained_on(cfg: Config, folds: pd.DataFrame, fold: int) -> None:
    """The fold's model must have validated on exactly the folds file's fold (else its OOF leaks)."""
    d = cfg.data
    path = RunDir(cfg.run_dir).fold_oof(fold)
    trained = read_table(path, [d.id_col], id_col=d.id_col)[d.id_col]
    if sorted(trained) != sorted(folds.loc[folds["fold"] == fold, d.id_col]):
        raise PipelineError(f"{path}: fold {fold} was trained on other folds than {cfg.folds_file} (run make train)")


def check_made_with(cfg: Config, run: RunDir, fm) -> None:
    """Refuse a checkpoint trained with other train settings than this effective config's (another
    run of the experiment with a SET override, say): a submission must not mix models of two
    configs. One written by an earlier release, which recorded no settings, is refused too."""
    made = recorded(fm.made_with, run.best(fm.fold), "run make train")
    diff = differences(cfg, "train", made["settings"])
    if diff:
        raise PipelineError(
            f"{run.best(fm.fold)}: trained with other settings than this config ({diff[0]}"
            f"{f' and {len(diff) - 1} more' if len(diff) > 1 else ''}); run make train"
        )


def tta_table(
    y: np.ndarray,
    oof_views: np.ndarray,
    views: list,
    mode: str,
    negative: int | None = None,
    multilabel: bool = False,
    metric: str = "accuracy",
    grades: np.ndarray | None = None,
) -> pd.DataFrame:
    """CV accuracy and log-loss (and the false-positive rate, given the negative class) of each
    named view set, merged with `mode`. multilabel None: a number (`grades`: an ordinal task's)."""
    if multilabel is None:
        return number_tta_table(y, oof_views, views, mode, metric, grades)
    rows = []
    for name, idx in tta.view_sets(views).items():
        p = tta.merge(oof_views[idx], mode, multilabel)
        rows.append({"views": name, "n_views": len(idx), "cv_accuracy": accuracy(y, p), "cv_log_loss": log_loss(y, p)})
        if metric not in ("accuracy", "log_loss"):
            rows[-1][f"cv_{metric}"] = score(metric, y, p)
        if negative is not None:
            rows[-1]["fp_rate"] = false_positive_rate(y, p, negative)
    return pd.DataFrame(rows)


def number_tta_table(y, oof_views, views: list, mode: str, metric: str, grades=None) -> pd.DataFrame:
    """A number's CV RMSE and MAE, and the metric (an ordinal task's kappa rounded to the nearest
    grade), of each named view set, merged with `mode`."""
    rows = []
    for name, idx in tta.view_sets(views).items():
        p = tta.merge(oof_views[idx], mode, True)
        row = {"views": name, "n_views": len(idx), "cv_rmse": rmse(y, p), "cv_mae": mae(y, p)}
        rows.append(row | ({f"cv_{metric}": score(metric, y, p, grades)} if f"cv_{metric}" not in row else {}))
    return pd.DataFrame(rows)


def calibrated(cfg: Config, run: RunDir, y, oof_probs, test_probs, folds: np.ndarray):
    """With infer.calibrate (auto: a log-loss metric), the OOF and test probabilities
    temperature-scaled on the OOF (pipeline/calibrate.py) and calibration.json written."""
    if not calibrate.wanted(cfg.infer.calibrate, cfg.metric):
        run.calibration.unlink(missing_ok=True)  # a stale report would describe other probabilities
        return oof_probs, test_probs
    oof_probs, test_probs, report = calibrate.calibrate(
        y, oof_probs, test_probs, folds, cfg.data.multilabel, cfg.metric
    )
    write_text(run.calibration, json.dumps(report, indent=1) + "\n")
    print(calibrate.describe(report))
    return oof_probs, test_probs


def fold_model(cfg: Config, run: RunDir, k: int, device, classes: list[str] | None):
    """Fold k's kept model, checked to be this config's and to predict the classes of fold 0."""
    fm = load_fold_model(run, k, device, cfg.runtime)
    check_made_with(cfg, run, fm)
    if classes is not None and fm.classes != classes:
        raise PipelineError(f"{run.best(k)}: classes {fm.classes} differ from fold 0's")
    return fm


def saved_classes(cfg: Config, run: RunDir) -> list[str]:
    """The classes of the run's oof.csv (id, fold and label columns, then one per class)."""
    d = cfg.data
    columns = read_table(run.oof, [d.id_col, "fold", d.label_col], id_col=d.id_col).columns
    return [c for c in columns if c not in (d.id_col, "fold", d.label_col)]


def saved_calibration(cfg: Config, run: RunDir, test_probs: np.ndarray) -> np.ndarray:
    """The test probabilities at the temperature infer fitted on the OOF (calibration.json), as
    the full run scales them; as they are when it fitted none or did not apply it."""
    if not run.calibration.is_file():
        return test_probs
    report = json.loads(run.calibration.read_text())
    return calibrate.scaled(test_probs, report["temperature"], cfg.data.multilabel) if report["applied"] else test_probs


def main(cfg: Config, test_only: bool = False) -> pd.DataFrame:
    """test_only: the test images alone, the OOF (oof.csv, calibration.json) taken as made: what
    an offline bundle runs on a code competition's hidden test set (python -m pipeline predict)."""
    d, t, run = cfg.data, cfg.infer.tta, RunDir(cfg.run_dir)
    if d.retrieval:  # the gallery is the training images: test-only reads them too
        comp = read_gallery(cfg, saved_classes(cfg, run)) if test_only else read_competition(cfg, check="infer")
        return retrieval_main(cfg, run, comp, test_only)
    # the sample, every image: checked before any model loads
    if test_only:
        comp, folds = None, None
        sample = check_competition(cfg, None, model=False, classes=saved_classes(cfg, run))
        test_paths = image_paths(d.root, d.test_images, sample[d.sample_id], d.path(d.sample_submission))
    else:
        comp = read_competition(cfg, check="infer")
        folds, sample, test_paths = comp.folds, comp.sample, comp.test_paths
    ids = sample[d.sample_id]  # written under d.id_col: every run's files name ids alike
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    fold_probs, classes, oof_views, source = [], None, None, None
    for k in range(cfg.folds.n_folds):
        if not test_only:
            check_trained_on(cfg, folds, k)
        fm = fold_model(cfg, run, k, device, classes)
        classes, views = fm.classes, tta.fold_views(fm, t)
        source = source or run_cache(cfg, fm.data_config, test_paths if test_only else comp.every_image)
        predict = partial(
            tta.predict_views, fm.model, dc=fm.data_config, views=views, batch_size=cfg.infer.batch_size,
            device=device, rt=cfg.runtime, multilabel=fm.act(d.multilabel), source=source,
        )  # fmt: skip
        # the test images in batches of their own, as a bundle's test-only run batches them: the same sums
        fold_probs.append(tta.merge(predict(test_paths), t.merge, d.independent))
        if not test_only:
            rows = np.flatnonzero(folds["fold"].to_numpy() == k)
            oof_views = np.zeros((len(views), len(folds), len(classes))) if oof_views is None else oof_views
            oof_views[:, rows] = predict(comp.images(folds.iloc[rows]).paths)
        valid = "" if test_only else f" and {len(rows)} validation"
        print(f"fold {k}: predicted {len(ids)} test{valid} images, {len(views)} views each")
    for k, probs in enumerate(fold_probs):  # after every fold's model loaded: no half-updated set of files
        write_csv(run.test_fold(k), prob_frame(ids, classes, probs, d.id_col))
    test_probs = np.mean(fold_probs, axis=0)
    if test_only:
        test_probs = saved_calibration(cfg, run, test_probs)
    else:
        test_probs = oof_outputs(cfg, run, folds, classes, views, oof_views, test_probs)
    test = prob_frame(ids, classes, test_probs, d.id_col)
    write_csv(run.test, test)  # Make's target: written last
    return test


def oof_outputs(cfg: Config, run: RunDir, folds, classes, views, oof_views, test_probs) -> np.ndarray:
    """The TTA table, the calibration (which also scales the test probabilities, returned) and
    oof.csv, from every fold's validation predictions under every view; the CV printed."""
    d, t = cfg.data, cfg.infer.tta
    y = y_true(folds[d.label_col], classes, d)
    grades = np.unique(y) if d.ordinal else None
    neg = classes.index(d.negative_class) if d.negative_class in classes and not d.multilabel else None
    table = tta_table(y, oof_views, views, t.merge, neg, None if d.numeric else d.multilabel, cfg.metric, grades)
    write_csv(run.tta, table)
    print(f"CV by TTA view set (merge: {t.merge}):\n{table.to_string(index=False, float_format='%.4f')}")
    oof_probs = tta.merge(oof_views, t.merge, d.independent)
    oof_probs, test_probs = calibrated(cfg, run, y, oof_probs, test_probs, folds["fold"].to_numpy())
    scored = cut_points(cfg, run, y, oof_probs, folds["fold"].to_numpy()) if d.ordinal else oof_probs
    oof = prob_frame(
        folds[d.id_col],
        classes,
        oof_probs,
        d.id_col,
        fold=folds["fold"].to_list(),
        **{d.label_col: folds[d.label_col].to_list()},
    )
    write_csv(run.oof, oof)
    folds_cv = per_fold(cfg.metric, y, scored, folds["fold"].to_numpy(), grades)
    print(
        f"{cfg.name}: CV {cfg.metric} "
        + " ".join(f"{k} {v:.4f}" for k, v in folds_cv.items())
        + f" (OOF, {len(oof)} images, {len(views)} TTA views)"
    )
    return test_probs


def cut_points(cfg: Config, run: RunDir, y: np.ndarray, oof: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """An ordinal task's cut-points fitted on the OOF (cutpoints.json); returns the OOF graded as
    the CV reports it: each fold's rows at the other folds' cut-points (ordinal.fit)."""
    graded, report = ordinal.fit(y, oof, folds, np.unique(y), cfg.metric)
    write_text(run.cutpoints, json.dumps(report, indent=1) + "\n")
    print(ordinal.describe(report))
    return graded


# ---- retrieval: embeddings, nearest neighbours, the new-individual threshold -----------------------


def embed_views(fm, paths, cfg: Config, device, source) -> np.ndarray:
    """(views, N, D) unit embeddings of the images under infer.tta's views (heads.Embedder)."""
    views = tta.fold_views(fm, cfg.infer.tta)
    return tta.predict_views(
        heads.Embedder(fm.model), paths, fm.data_config, views, cfg.infer.batch_size, device, cfg.runtime,
        heads.Unit, source,
    )  # fmt: skip


def retrieval_main(cfg: Config, run: RunDir, comp, test_only: bool = False) -> pd.DataFrame:
    """Every fold model's embeddings of the training and test images, the similarity tables
    written as infer writes probabilities, the new-individual threshold's CV printed."""
    d, folds = cfg.data, comp.folds
    ids, n = comp.sample[d.sample_id], len(comp.classes)
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    tests, oof, sets, source = [], np.full((len(folds), n), retrieval.ABSENT, np.float32), {}, None
    for k in range(cfg.folds.n_folds):
        if not test_only:
            check_trained_on(cfg, folds, k)
        fm = fold_model(cfg, run, k, device, comp.classes)
        source = source or run_cache(cfg, fm.data_config, comp.every_image)
        train_views = embed_views(fm, comp.paths, cfg, device, source)
        test_views = embed_views(fm, comp.test_paths, cfg, device, source)
        gallery = retrieval.unit_mean(train_views)
        tests.append(retrieval.similarities(retrieval.unit_mean(test_views), gallery, comp.targets, n))
        print(f"fold {k}: embedded {len(comp.paths)} training (the gallery) and {len(ids)} test images")
        if test_only:
            continue
        valid = folds["fold"].to_numpy() == k
        oof[valid] = retrieval.similarities(gallery[valid], gallery[~valid], comp.targets[~valid], n)
        for name, idx in tta.view_sets(tta.fold_views(fm, cfg.infer.tta)).items():
            e = retrieval.unit_mean(train_views[idx])
            if name not in sets:  # each view set's own OOF table, filled fold by fold
                sets[name] = np.full_like(oof, retrieval.ABSENT)
            sets[name][valid] = retrieval.similarities(e[valid], e[~valid], comp.targets[~valid], n)
    for k, table in enumerate(tests):
        write_csv(run.test_fold(k), prob_frame(ids, comp.classes, table.round(6), d.id_col))
    test = prob_frame(ids, comp.classes, np.mean(tests, axis=0).round(6), d.id_col)
    if not test_only:
        retrieval_oof(cfg, run, comp, oof, sets)
    write_csv(run.test, test)  # Make's target: written last
    return test


def retrieval_oof(cfg: Config, run: RunDir, comp, oof: np.ndarray, sets: dict) -> None:
    """oof.csv, the TTA table (MAP@k per view set, with and without the new individual) and the CV."""
    d, folds, k = cfg.data, comp.folds, k_of(cfg.metric)
    f, new = folds["fold"].to_numpy(), d.new_individual is not None
    rows = []
    for name, table in sets.items():
        c = retrieval.choose(comp.targets, table, f, k, new)
        rows.append({"views": name, f"cv_{cfg.metric}": c.cross_fitted, f"cv_{cfg.metric}_without_new": c.without_new})
    write_csv(run.tta, pd.DataFrame(rows))
    print(f"CV by TTA view set:\n{pd.DataFrame(rows).to_string(index=False, float_format='%.4f')}")
    extra = {"fold": folds["fold"].to_list(), d.label_col: folds[d.label_col].to_list()}
    write_csv(run.oof, prob_frame(folds[d.id_col], comp.classes, oof.round(6), d.id_col, **extra))
    choice = retrieval.choose(comp.targets, oof, f, k, new)
    print(choice.describe(d.new_individual))
    t = retrieval.truth(comp.targets, oof)
    per = " ".join(f"fold{j} {retrieval.score(t[f == j], oof[f == j], k, choice.threshold):.4f}" for j in np.unique(f))
    print(
        f"{cfg.name}: CV {cfg.metric} {choice.cross_fitted:.4f} (OOF, {len(folds)} images, the threshold "
        f"cross-fitted; per fold at the threshold fitted on all: {per})"
    )
