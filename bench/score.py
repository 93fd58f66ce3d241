"""Score a label submission against a labels file (the ants-bees test labels, made by eye).

Usage: python bench/score.py SUBMISSION_CSV [--labels bench/ants-bees-test-labels.csv]
       python bench/score.py SUBMISSION_CSV --labels FILE --multilabel [--id-col C --label-col C]

The competition ships no test labels. bench/ants-bees-test-labels.csv was made by a person
looking at every test image (see bench/README.md); the pipeline never reads it.
--multilabel: cells of space-separated labels, scored by the mean F1 and F2 per image (Kaggle's
Planet and iMet), beside the best constant answer (the one label set of one or two labels that
scores best on these very labels: a constant that has seen the answers, so a fair floor).
"""

import argparse
import itertools
import sys

import numpy as np
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


def f_per_image(pred: list[set], truth: list[set], beta: float) -> float:
    b2, out = beta * beta, []
    for p, t in zip(pred, truth):
        tp = len(p & t)
        denom = (1 + b2) * tp + b2 * len(t - p) + len(p - t)
        out.append((1 + b2) * tp / denom if denom else 1.0)
    return float(np.mean(out))


def hidden_multilabel(submission, labels, id_col: str, label_col: str) -> str:
    """'mean F1 0.81, F2 0.83; best constant ('sea',): F1 0.40, F2 0.45' against the hidden labels."""
    sub, truth = (read_labels(path, id_col, label_col).fillna("") for path in (submission, labels))
    if set(sub.index) != set(truth.index):
        raise ValueError(f"{submission}: ids differ from {labels}")
    want = [set(v.split()) for v in truth]
    got = [set(v.split()) for v in sub.loc[truth.index]]
    tags = sorted(set().union(*want))
    constants = [set(c) for n in (1, 2) for c in itertools.combinations(tags, n)]
    best = max(constants, key=lambda c: f_per_image([c] * len(want), want, 1.0))
    const = [best] * len(want)
    return (
        f"mean F1 per image {f_per_image(got, want, 1.0):.4f}, F2 {f_per_image(got, want, 2.0):.4f}; "
        f"best constant {' '.join(sorted(best))}: F1 {f_per_image(const, want, 1.0):.4f}, "
        f"F2 {f_per_image(const, want, 2.0):.4f} ({len(want)} images)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("submission")
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--id-col", default="image_id")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--multilabel", action="store_true", help="space-separated labels: mean F1/F2 per image")
    args = ap.parse_args()
    try:
        if args.multilabel:
            print(f"{args.submission}: {hidden_multilabel(args.submission, args.labels, args.id_col, args.label_col)}")
            return 0
        score = hidden_accuracy(args.submission, args.labels, args.id_col, args.label_col)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.submission}: hidden-test accuracy {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
