"""A multi-label task's CV table: the new metrics, and each way of turning probabilities into labels.

Usage: python bench/multilabel_cv.py RUN [RUN ...] [--out FILE]
       (the runs of `make sweep CONFIG=configs/scenes.yaml SWEEP="train.label_smoothing=0,0.1,0.2"`)

Each run's OOF (runs/<name>/oof.csv, with TTA as infer wrote it) scored by log-loss, macro F1 at
0.5, the mean F1 per image at 0.5, and f1_samples and f2_samples with the thresholds the ensemble
stage would keep (pipeline/thresholds.py: 0.5, one for all or one per label, chosen cross-fitted),
with an empty set of labels allowed and not: every figure cross-fitted where anything was fitted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from ablation import markdown

from pipeline import metrics, thresholds
from pipeline.labels import y_true
from pipeline.upstream import read_predictions


def row(run: str) -> dict:
    pred = read_predictions(run)
    d, classes = pred.cfg.data, pred.classes
    y = y_true(pred.oof[d.label_col], classes, d)
    p, folds = pred.oof[classes].to_numpy(), pred.oof["fold"].to_numpy()
    out = {"run": Path(run).name, "log_loss": metrics.log_loss(y, p), "f1_macro@0.5": metrics.f1_macro(y, p)}
    out["f1_samples@0.5"] = metrics.f1_samples(y, p)
    for metric in ("f1_samples", "f2_samples"):
        for empty in (True, False):
            c = thresholds.choose(y, p, folds, metric, empty)
            out[f"{metric} tuned, {'empty allowed' if empty else 'never empty'}"] = (
                f"{c.cross_fitted[c.way]:.4f} ({c.way})"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    text = markdown(pd.DataFrame([row(r) for r in args.runs]))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
