"""OOF accuracy and log-loss of finished experiments (their runs/<name>/oof.csv).

Usage: python bench/oof_scores.py RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import pandas as pd
import yaml

from pipeline.metrics import accuracy, log_loss


def main(runs: list[str]) -> int:
    if not runs:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for run in map(Path, runs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        oof = pd.read_csv(run / "oof.csv", dtype={cfg["data"]["label_col"]: str})
        classes = [c for c in oof.columns if c not in (cfg["data"]["id_col"], cfg["data"]["label_col"], "fold")]
        y = oof[cfg["data"]["label_col"]].map({c: i for i, c in enumerate(classes)}).to_numpy()
        probs = oof[classes].to_numpy()
        probs = probs / probs.sum(1, keepdims=True)  # the CSV rounds: sklearn wants rows summing to 1
        print(f"{run}: OOF accuracy {accuracy(y, probs):.4f}, log-loss {log_loss(y, probs):.4f} ({len(y)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
