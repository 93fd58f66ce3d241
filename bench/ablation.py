"""The training tricks, each switched on alone over a config's recipe, then the combination of
those that helped: 5-fold CV, OOF log-loss before and after temperature scaling, and wall time.

Usage: python bench/ablation.py CONFIG [--only NAME ...] [--out FILE]
       (make_digits.py --ten first for configs/digits-10.yaml)

Each variant is `python -m pipeline train CONFIG name=abl-<config>-<variant> <overrides>` (every
fold; a finished run is reused), scored on the folds' own OOF (runs/<name>/fold<k>/oof.csv, no
TTA). "combined" switches on every variant that beat the recipe on this config in both CV
accuracy (not lower) and calibrated OOF log-loss (lower; calibrated, so that a switch is not
credited or blamed for the under-confidence that temperature scaling removes anyway): defaults
are chosen on CV alone. The table goes to stdout and to --out (Markdown).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.calibrate import calibrate
from pipeline.config_files import load_config
from pipeline.labels import encode
from pipeline.metrics import accuracy, log_loss

VARIANTS = {
    "recipe": [],
    "ema": ["train.ema.decay=0.998"],
    "swa": ["train.swa.epochs=3"],
    "mixup+cutmix": ["train.mixup.mixup_alpha=0.2", "train.mixup.cutmix_alpha=1.0"],
    "focal": ["train.loss=focal"],
    "rdrop": ["train.rdrop=1.0"],
    "fgm": ["train.fgm.target=input"],
}


def run(config: str, name: str, overrides: list[str]) -> float:
    """Train every fold; the seconds it took (kept in runs/<name>/wall_seconds.txt, so a finished
    run that is reused reports its own time)."""
    start = time.time()
    cmd = [sys.executable, "-m", "pipeline", "train", config, f"name={name}", *overrides]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    record = load_config(config, [f"name={name}"]).run_dir / "wall_seconds.txt"
    if time.time() - start > 30 or not record.is_file():
        record.write_text(f"{time.time() - start:.0f}\n")
    return float(record.read_text())


def scores(config: str, name: str) -> dict:
    """CV accuracy, OOF log-loss, and the log-loss after cross-fitted temperature scaling."""
    cfg = load_config(config, [f"name={name}"])
    oof = pd.concat(
        pd.read_csv(cfg.run_dir / f"fold{k}" / "oof.csv", dtype={cfg.data.label_col: str})
        for k in range(cfg.folds.n_folds)
    )
    classes = [c for c in oof.columns if c not in (cfg.data.id_col, cfg.data.label_col, "fold")]
    y = encode(oof[cfg.data.label_col], classes, cfg.data.sep)
    probs = oof[classes].to_numpy()
    probs = probs / probs.sum(1, keepdims=True)
    _, _, report = calibrate(y, probs, probs[:1], oof["fold"].to_numpy(), cfg.data.multilabel)
    return {
        "cv_accuracy": accuracy(y, probs),
        "oof_log_loss": log_loss(y, probs),
        "calibrated_log_loss": report["oof_log_loss_after"],
        "temperature": report["temperature"],
    }


def markdown(table: pd.DataFrame) -> str:
    def cell(column: str, v) -> str:
        return f"{v:.1f}" if column == "minutes" else f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[cell(c, v) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--only", nargs="*", default=None, help="these variants (and the recipe)")
    ap.add_argument("--out", default=None, help="Markdown table file")
    args = ap.parse_args(argv)
    stem = Path(args.config).stem
    subprocess.run([sys.executable, "-m", "pipeline", "folds", args.config], check=True)  # made once, then kept
    chosen = {k: v for k, v in VARIANTS.items() if args.only is None or k in args.only or k == "recipe"}
    rows = []
    for variant, overrides in chosen.items():
        name = f"abl-{stem}-{variant.replace('+', '-')}"
        seconds = run(args.config, name, overrides)
        rows.append({"variant": variant, **scores(args.config, name), "minutes": round(seconds / 60, 1)})
        print(pd.DataFrame(rows).to_string(index=False, float_format="%.4f"), flush=True)
    table = pd.DataFrame(rows)
    base = table[table["variant"] == "recipe"].iloc[0]
    helped = [
        row.variant
        for row in table.itertuples()
        if row.variant != "recipe"
        and row.cv_accuracy >= base.cv_accuracy
        and row.calibrated_log_loss < base.calibrated_log_loss
    ]
    if len(helped) > 1:
        overrides = [o for v in helped for o in VARIANTS[v]]
        seconds = run(args.config, f"abl-{stem}-combined", overrides)
        combined = {"variant": "combined: " + " + ".join(helped), **scores(args.config, f"abl-{stem}-combined")}
        table = pd.concat([table, pd.DataFrame([{**combined, "minutes": round(seconds / 60, 1)}])])
    print(table.to_string(index=False, float_format="%.4f"))
    if args.out:
        Path(args.out).write_text(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
