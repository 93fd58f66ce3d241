"""False positives before and after hard-negative mining, from experiments' predictions.

Usage: python bench/fp_report.py RUN [RUN ...] [--test-labels CSV]

For each experiment folder (runs/<name>) prints, on its OOF predictions (the validation folds,
with infer's TTA): accuracy, the false-positive rate (negatives called positive) and the recall of
the positives. With --test-labels (image_id,label), the same on its test predictions.
"""

import argparse
from pathlib import Path

import pandas as pd
import yaml


def rates(df: pd.DataFrame, labels: pd.Series, negative: str, classes: list[str]) -> str:
    pred = df[classes].idxmax(axis=1).to_numpy()
    truth = labels.to_numpy()
    neg = truth == negative
    fp, pos_hit = (pred[neg] != negative).sum(), (pred[~neg] == truth[~neg]).sum()
    return (
        f"accuracy {(pred == truth).mean():.4f}  false-positive rate {fp / neg.sum():.4f} "
        f"({fp}/{neg.sum()})  positive recall {pos_hit / (~neg).sum():.4f} ({pos_hit}/{(~neg).sum()})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--test-labels", type=Path)
    args = ap.parse_args()
    for run in args.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        id_col, label_col, negative = (cfg["data"][k] for k in ("id_col", "label_col", "negative_class"))
        oof = pd.read_csv(run / "oof.csv", dtype={id_col: str})
        classes = [c for c in oof.columns if c not in (id_col, "fold", label_col)]
        print(f"{run.name}: validation folds: {rates(oof, oof[label_col], negative, classes)}")
        if args.test_labels:
            test = pd.read_csv(run / "test.csv", dtype={id_col: str})
            truth = pd.read_csv(args.test_labels, dtype=str).set_index(id_col).loc[test[id_col], label_col]
            print(f"{run.name}: test:             {rates(test, truth, negative, classes)}")


if __name__ == "__main__":
    main()
