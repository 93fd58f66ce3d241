"""The recipe against the walking skeleton's single-phase fine-tune, on Lite0 and Lite2: each
config trained, inferred and ensembled as written (make ensemble), then scored on the hidden test.

Usage: python bench/recipe_check.py [--only ants-bees-skeleton,...] [--out bench/recipe-check.md]

Same folds file and ImageNet weights for every column. A config whose run is already complete is
not retrained (make has nothing to do), so its wall time then reads as "-": time a column from
scratch with `rm -rf runs/<name>` first. The table goes to --out and docs/recipe.md quotes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from score import hidden_accuracy  # bench/score.py, beside this script

from pipeline.config_files import load_config

CONFIGS = {  # config file: its column heading
    "configs/ants-bees-skeleton.yaml": "Lite0 (a) skeleton",
    "configs/ants-bees-lite0.yaml": "Lite0 (b) recipe",
    "configs/ants-bees-lite2-skeleton.yaml": "Lite2 (a) skeleton",
    "configs/ants-bees.yaml": "Lite2 (b) recipe (the demo)",
}


def run_one(config: str, py: str) -> dict:
    name = load_config(config).name
    fresh = not (Path("runs") / name / "tta.csv").is_file()
    start = time.time()
    subprocess.run(["make", "--no-print-directory", "ensemble", f"CONFIG={config}", f"PY={py}"], check=True)
    minutes = time.time() - start
    tta = pd.read_csv(Path("runs") / name / "tta.csv").set_index("views")
    return {
        "config": f"[{Path(config).name}](../{config})",
        "5-fold CV accuracy": f"{tta.loc['none', 'cv_accuracy']:.4f}",
        "OOF log-loss": f"{tta.loc['none', 'cv_log_loss']:.4f}",
        "with the default TTA: CV": f"{tta.loc['all', 'cv_accuracy']:.4f}",
        "with the default TTA: OOF log-loss": f"{tta.loc['all', 'cv_log_loss']:.4f}",
        "hidden-test accuracy (with TTA, as submitted)": hidden_accuracy(Path("submissions") / f"{name}.csv"),
        "wall time (make ensemble)": f"{int(minutes // 60)} min {int(minutes % 60)} s" if fresh else "-",
    }


def markdown(columns: dict[str, dict]) -> str:
    """One column per config, one row per measure, as docs/recipe.md shows it."""
    rows = next(iter(columns.values())).keys()
    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {r} | " + " | ".join(c[r] for c in columns.values()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated config stems (default: all four)")
    ap.add_argument("--out", default="bench/recipe-check.md")
    args = ap.parse_args()
    wanted = [c for c in CONFIGS if not args.only or Path(c).stem in args.only.split(",")]
    columns = {}
    for config in wanted:
        columns[CONFIGS[config]] = run_one(config, sys.executable)
        Path(args.out).write_text(markdown(columns))
        print(markdown(columns), flush=True)


if __name__ == "__main__":
    main()
