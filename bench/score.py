"""Score a label submission against a labels file (the ants-bees test labels, made by eye).

Usage: python bench/score.py SUBMISSION_CSV [--labels bench/ants-bees-test-labels.csv]
       python bench/score.py SUBMISSION_CSV --labels FILE --multilabel [--id-col C --label-col C]
       python bench/score.py SUBMISSION_CSV --labels FILE --retrieval TRAIN_CSV [--new new_individual]

The competition ships no test labels. bench/ants-bees-test-labels.csv was made by a person
looking at every test image (see bench/README.md); the pipeline never reads it.
--multilabel: cells of space-separated labels, scored by the mean F1 and F2 per image (Kaggle's
Planet and iMet), beside the best constant answer (the one label set of one or two labels that
scores best on these very labels: a constant that has seen the answers, so a fair floor).
--retrieval TRAIN_CSV: cells of up to five space-separated ids, best first, scored by MAP@5 (Kaggle's
Happywhale); a test image whose individual TRAIN_CSV never names is answered by --new. Beside it,
--new alone everywhere (the constant answer).
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


def map_at_5(cells: list[str], truth: list[str]) -> float:
    """The mean over images of 1/rank of the right id among the first five guesses (0: absent)."""
    out = []
    for cell, want in zip(cells, truth):
        guesses = cell.split()[:5]
        out.append(1.0 / (guesses.index(want) + 1) if want in guesses else 0.0)
    return float(np.mean(out))


def hidden_retrieval(submission, labels, train_csv, id_col: str, label_col: str, new: str) -> str:
    """'MAP@5 0.71; 'new_individual' alone 0.10 (745 images, 160 of unseen individuals)'."""
    sub, truth = read_labels(submission, id_col, "predictions").fillna(""), read_labels(labels, id_col, label_col)
    if set(sub.index) != set(truth.index):
        raise ValueError(f"{submission}: ids differ from {labels}")
    seen = set(read_labels(train_csv, id_col, label_col))
    want = [t if t in seen else new for t in truth]
    unseen = sum(w == new for w in want)
    return (
        f"MAP@5 {map_at_5(list(sub.loc[truth.index]), want):.4f}; '{new}' alone "
        f"{map_at_5([new] * len(want), want):.4f} ({len(want)} images, {unseen} of unseen individuals)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("submission")
    ap.add_argument("--labels", default=LABELS)
    ap.add_argument("--id-col", default="image_id")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--multilabel", action="store_true", help="space-separated labels: mean F1/F2 per image")
    ap.add_argument("--retrieval", metavar="TRAIN_CSV", help="five guesses per image: MAP@5")
    ap.add_argument("--new", default="new_individual", help="--retrieval: the answer for an unseen individual")
    args = ap.parse_args()
    try:
        if args.retrieval:
            got = hidden_retrieval(args.submission, args.labels, args.retrieval, args.id_col, args.label_col, args.new)
            print(f"{args.submission}: {got}")
            return 0
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
