"""The numbers' 5-fold CV table on ELPV: what the regression and ordinal defaults are chosen by.

Usage: python bench/elpv_cv.py [--only NAME ...] [--out FILE]      (make bench-numbers; make elpv first)

Rows, each scored on the folds' own out-of-fold predictions (runs/<name>/fold<k>/oof.csv, no TTA):
  train mean       every fold predicts its training folds' mean (no model)
  classes          configs/elpv-ordinal.yaml as a 4-class classification (cross-entropy); the number is
                   the expected grade, sum of p(grade) x grade
  <loss> <range>   configs/elpv-regression.yaml with train.loss <loss> and model.y_range auto or null
Columns: RMSE of the defect probability (0..1; the regression's metric); the quadratic weighted
kappa of the grade (the ordinal task's metric: the number x 3) after plain rounding to the nearest
grade and after cut-points fitted on the OOF (cross-fitted: each fold's rows graded by the cut-points
of the other folds, pipeline/ordinal.py); and the training minutes. The ordinal task trains exactly
as `mse auto` does (its targets, scaled to the range, are the same), so its row is that one's
kappa columns. Each run is `python -m pipeline train CONFIG name=num-<variant> ...` (a finished one
is reused). The table goes to stdout and to --out (Markdown).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ablation import markdown  # the same Markdown table (bench/ is on the path of a bench script)

from pipeline import ordinal
from pipeline.config_files import load_config
from pipeline.folds_file import load_folds
from pipeline.metrics import qwk, rmse

REGRESSION, GRADES = "configs/elpv-regression.yaml", "configs/elpv-ordinal.yaml"
VARIANTS = {
    "classes": (GRADES, ["data.task=multiclass", "metric=accuracy", "train.loss=ce"]),
    **{  # bce needs a range
        f"{loss} {rng}": (REGRESSION, [f"train.loss={loss}", f"model.y_range={rng}"])
        for loss, rng in [("mse", "auto"), ("mse", "null"), ("bce", "auto"), ("l1", "auto"), ("smooth_l1", "auto"),
                          ("smooth_l1", "null"), ("l1", "null")]
    },
}  # fmt: skip


def run(config: str, name: str, overrides: list[str]) -> float:
    """Train every fold; the minutes it took (kept beside the run, so a reused run reports its own)."""
    record = load_config(config, [f"name={name}", *overrides]).run_dir / "wall_seconds.txt"
    start = time.time()
    cmd = [sys.executable, "-m", "pipeline", "train", config, f"name={name}", *overrides]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if time.time() - start > 30 or not record.is_file():
        record.write_text(f"{time.time() - start:.0f}\n")
    return float(record.read_text()) / 60


def oof(config: str, name: str, overrides: list[str]) -> pd.DataFrame:
    cfg = load_config(config, [f"name={name}", *overrides])
    return pd.concat(pd.read_csv(cfg.run_dir / f"fold{k}" / "oof.csv") for k in range(cfg.folds.n_folds))


def grade_scores(defect_pred: np.ndarray, grade: np.ndarray, folds: np.ndarray) -> dict:
    """The kappa of the grade (defect x 3) rounded, and after cross-fitted cut-points."""
    g = np.arange(4.0)
    pred = 3 * np.asarray(defect_pred, dtype=float)
    _, report = ordinal.fit(grade, pred, folds, g, "qwk")
    return {
        "qwk rounded": qwk(grade, ordinal.cut(pred, ordinal.midpoints(g), g), g),
        "qwk cut-points": report["oof_cut_points"],
    }


def row(name: str, defect_pred, table: pd.DataFrame, minutes: float) -> dict:
    y = table["defect"].to_numpy(dtype=float)
    grades = np.rint(3 * y)
    return {
        "variant": name,
        "rmse": rmse(y, defect_pred),
        **grade_scores(defect_pred, grades, table["fold"].to_numpy()),
        "minutes": minutes,
    }


def truth() -> pd.DataFrame:
    """train.csv's defect with the folds file's fold per row (the regression's folds file)."""
    cfg = load_config(REGRESSION)
    return load_folds(cfg)[["image_id", "defect", "fold"]].astype({"defect": float})


def mean_row(table: pd.DataFrame) -> dict:
    pred = np.empty(len(table))
    for k in table["fold"].unique():
        pred[table["fold"] == k] = table.loc[table["fold"] != k, "defect"].mean()
    return row("train mean", pred, table, 0.0)


def variant_row(variant: str, table: pd.DataFrame) -> dict:
    config, overrides = VARIANTS[variant]
    name = "num-" + variant.replace(" ", "-")
    minutes = run(config, name, overrides)
    df = oof(config, name, overrides).set_index("image_id").loc[table["image_id"]]
    if variant == "classes":
        pred = (df[["0", "1", "2", "3"]].to_numpy() * np.arange(4)).sum(1) / 3  # expected grade, as a defect
    else:
        pred = df["prediction"].to_numpy()
    return row(variant, pred, table, minutes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    ap.add_argument("--out", default=None, help="write the Markdown table here too")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "pipeline", "folds", REGRESSION], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pipeline", "folds", GRADES], check=True, stdout=subprocess.DEVNULL)
    table = truth()
    rows = [mean_row(table)]
    for variant in args.only or VARIANTS:
        rows.append(variant_row(variant, table))
        md = markdown(pd.DataFrame(rows))
        print(md, flush=True)
        if args.out:  # after every row: a long run stopped early keeps what it measured
            Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
