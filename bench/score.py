"""Score a label submission against a labels file (the ants-bees test labels, made by eye).

Usage: python bench/score.py SUBMISSION_CSV [--labels bench/ants-bees-test-labels.csv]

The competition ships no test labels. bench/ants-bees-test-labels.csv was made by a person
looking at every test image (see bench/README.md); the pipeline never reads it.
"""

import argparse
import sys

import pandas as pd

LABELS = "bench/ants-bees-test-labels.csv"  # made by eye; the pipeline never reads it


def read_labels(path, id_col: str, label_col: str) -> pd.Series:
    table = pd.read_csv(path, dtype=str)
    missing = [c for c in (id_col, label_col) if c not in table.columns]
    if missing:
        has = ", ".join(table.columns)
        raise ValueError(f"{path}: no column {', '.join(missing)} (has {has}): pass --id-col/--label-col")
    return table.set_index(id_col)[label_col]


def hidden_accuracy(submission, labels=LABELS, id_col: str = "image_id", label_col: str = "label") -> str:
    """'0.9608 (147/153)': the submission's labels against the hidden ones. ValueError when the ids
    differ or a column is missing."""
    sub, truth = (read_labels(path, id_col, label_col) for path in (submission, labels))
    if set(sub.index) != set(truth.index):
        raise ValueError(f"{submission}: ids differ from {labels}")
    right = (sub.loc[truth.index] == truth).to_numpy()
    return f"{right.mean():.4f} ({right.sum()}/{len(right)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("submission")
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--id-col", default="image_id")
    ap.add_argument("--label-col", default="label")
    args = ap.parse_args()
    try:
        score = hidden_accuracy(args.submission, args.labels, args.id_col, args.label_col)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.submission}: hidden-test accuracy {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
