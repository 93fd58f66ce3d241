"""The augmentation CV table: each example pipeline and the one-key policies against today's
default, 5-fold CV on the data each fits (docs/augmentation.md).

Usage: python bench/aug_cv.py [--only DATASET ...] [--variants NAME ...] [--out FILE]
       make bench-aug [ONLY="elpv digits clothing"]   (default: elpv)

Datasets and their rows (each a config, with overrides, trained through `python -m pipeline
train`; a finished run is reused):
  elpv      configs/elpv-regression.yaml (RMSE): default, overhead (elpv-overhead.yaml),
            scans (elpv-scans.yaml), randaugment, trivial           (make elpv first)
  digits    configs/digits-10.yaml (its metric): default, digits (digits-aug.yaml), randaugment,
            trivial                                                   (python bench/make_digits.py --ten)
  clothing  configs/clothing.yaml (accuracy, grouped by sender): default (photos), randaugment,
            trivial, each at 96 px with 1 + 2 epochs (SHORT) so that the three fit 40 minutes on a
            2-core CPU                                          (../shared/competitions/clothing)
randaugment and trivial are the dataset's default config with train.aug.policy rand-m9-mstd0.5 or
trivial and the colour jitter off. Each row is scored on the folds' own out-of-fold predictions
(fold<k>/oof.csv, no TTA) in the config's metric, with the minutes training took. A default
changes only if every dataset it applies to says so. --out keeps the rows of the datasets not run
this time, so `make bench-aug ONLY=digits` adds to the table instead of replacing it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from ablation import markdown  # the same Markdown table (bench/ is on the path of a bench script)

from pipeline.config_files import load_config
from pipeline.folds_file import load_folds
from pipeline.labels import y_true
from pipeline.metrics import score

POLICIES = {
    "randaugment": ["train.aug.policy=rand-m9-mstd0.5", "train.aug.color_jitter=0.0"],
    "trivial": ["train.aug.policy=trivial", "train.aug.color_jitter=0.0"],
}
SHORT = ["model.img_size=96", "train.phases.0.epochs=1", "train.phases.1.epochs=2"]  # clothing on a CPU
DATASETS = {
    "elpv": {
        "default": ("configs/elpv-regression.yaml", []),
        "overhead": ("configs/elpv-overhead.yaml", []),
        "scans": ("configs/elpv-scans.yaml", []),
        **{k: ("configs/elpv-regression.yaml", v) for k, v in POLICIES.items()},
    },
    "digits": {
        "default": ("configs/digits-10.yaml", []),
        "digits": ("configs/digits-aug.yaml", []),
        **{k: ("configs/digits-10.yaml", v) for k, v in POLICIES.items()},
    },
    "clothing": {
        "default": ("configs/clothing.yaml", SHORT),
        **{k: ("configs/clothing.yaml", SHORT + v) for k, v in POLICIES.items()},
    },
}


def trained(config: str, name: str, overrides: list[str]) -> float:
    """Train every fold (a finished run is reused); the minutes it took, kept beside the run."""
    cfg = load_config(config, [f"name={name}", *overrides])
    record = cfg.run_dir / "wall_seconds.txt"
    start = time.time()
    for stage in ("folds", "train"):
        cmd = [sys.executable, "-m", "pipeline", stage, config, f"name={name}", *overrides]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if time.time() - start > 30 or not record.is_file():
        record.write_text(f"{time.time() - start:.0f}\n")
    return float(record.read_text()) / 60


def cv(config: str, name: str, overrides: list[str]) -> float:
    """The config's metric on the folds' out-of-fold predictions, all folds at once."""
    cfg = load_config(config, [f"name={name}", *overrides])
    oof = pd.concat(pd.read_csv(cfg.run_dir / f"fold{k}" / "oof.csv") for k in range(cfg.folds.n_folds))
    classes = [c for c in oof.columns if c not in (cfg.data.id_col, "fold", cfg.data.label_col)]
    labels = load_folds(cfg).set_index(cfg.data.id_col).loc[oof[cfg.data.id_col], cfg.data.label_col]
    y = y_true(labels.reset_index(drop=True), classes, cfg.data)
    grades = np.unique(y) if cfg.data.ordinal else None
    return score(cfg.metric, y, oof[classes].to_numpy(), grades)


def merged(path: str, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of `table`, after the rows of the Markdown table at `path` whose datasets it lacks."""
    if not os.path.isfile(path):
        return table
    with open(path) as f:
        lines = [line.strip().strip("|").split("|") for line in f if line.startswith("| ")]
    if len(lines) < 2:  # an empty or header-only table keeps nothing
        return table
    kept = pd.DataFrame([[c.strip() for c in line] for line in lines[1:]], columns=[c.strip() for c in lines[0]])
    kept = kept[~kept.dataset.isin(table.dataset)].astype({"cv": float, "minutes": float})
    return pd.concat([kept, table], ignore_index=True) if len(kept) else table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, choices=list(DATASETS), help="datasets (default: all)")
    ap.add_argument("--variants", nargs="*", default=None, help="rows to run (default: every row of each)")
    ap.add_argument("--out", default=None, help="write the Markdown table here too")
    args = ap.parse_args()
    rows = []
    for dataset in args.only or DATASETS:
        for variant, (config, overrides) in DATASETS[dataset].items():
            if args.variants and variant not in args.variants:
                continue
            name = f"aug-{dataset}-{variant}"
            minutes = trained(config, name, overrides)
            metric = load_config(config, overrides).metric
            rows.append({"dataset": dataset, "variant": variant, "metric": metric,
                         "cv": cv(config, name, overrides), "minutes": round(minutes, 1)})  # fmt: skip
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(markdown(table))
    if args.out:
        text = markdown(merged(args.out, table))  # read before the file is opened for writing
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
