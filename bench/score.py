"""Score a label submission against a labels file (the ants-bees test labels, made by eye).

Usage: python bench/score.py SUBMISSION_CSV [--labels bench/ants-bees-test-labels.csv]

The competition ships no test labels. bench/ants-bees-test-labels.csv was made by a person
looking at every test image (see bench/README.md); the pipeline never reads it.
"""

import argparse
import sys

import pandas as pd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("submission")
    ap.add_argument("--labels", default="bench/ants-bees-test-labels.csv")
    ap.add_argument("--id-col", default="image_id")
    ap.add_argument("--label-col", default="label")
    args = ap.parse_args()
    sub = pd.read_csv(args.submission, dtype=str).set_index(args.id_col)[args.label_col]
    truth = pd.read_csv(args.labels, dtype=str).set_index(args.id_col)[args.label_col]
    if set(sub.index) != set(truth.index):
        print(f"error: {args.submission}: ids differ from {args.labels}", file=sys.stderr)
        return 2
    right = (sub.loc[truth.index] == truth).to_numpy()
    print(f"{args.submission}: hidden-test accuracy {right.mean():.4f} ({right.sum()}/{len(right)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
