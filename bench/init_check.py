"""make init on every competition the project has, each written config trained and submitted as
written (make ensemble), beside the hand-written config's CV where its run is on disk.

Usage: python bench/init_check.py [--only ants-bees,digits-10] [--out bench/init-check.md]

Writes configs/init/init-<competition>.yaml (kept when there: init never overwrites), runs
`make ensemble` on it, and tabulates what init chose, the CV with and without TTA, and the wall
time. The hand-written config's CV is read from runs/<its name>/tta.csv when that run exists
(make ensemble CONFIG=<it> makes it). Build the data first: make elpv, bench/make_digits.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

COMPETITIONS = {  # name: (folder, init's options, the hand-written config)
    "ants-bees": ("data/ants-bees", [], "configs/ants-bees.yaml"),
    "digits-10": ("data/digits-10", [], "configs/digits-10.yaml"),
    "clothing": ("../shared/competitions/clothing", [], "configs/clothing.yaml"),
    "elpv-defect": ("data/elpv", ["--sample", "sample_submission_defect.csv"], "configs/elpv-regression.yaml"),
    "elpv-grade": ("data/elpv", ["--sample", "sample_submission_grade.csv"], "configs/elpv-ordinal.yaml"),
    "digits-eights": ("data/digits-eights", [], None),  # digits-round1 trains on a tenth of the negatives
}


def cv(run: Path, metric: str) -> tuple[float | None, float | None]:
    """(without TTA, with it) in the metric from a run's tta.csv (an ordinal task's kappa rounded,
    before any cut-points), or Nones when the run is not there."""
    if not (run / "tta.csv").is_file():
        return None, None
    table = pd.read_csv(run / "tta.csv").set_index("views")
    return float(table.loc["none", f"cv_{metric}"]), float(table.loc["all", f"cv_{metric}"])


def chose(config: Path) -> str:
    doc = yaml.safe_load(config.read_text())
    m, d, t = doc["model"], doc["data"], doc["train"]
    epochs = "+".join(str(p["epochs"]) for p in t["phases"])
    size = m["img_size"] or "own"
    group = f", group {d['group_col']}" if d.get("group_col") else ""
    backbone = m["backbone"].removeprefix("tf_efficientnet_")
    return f"{d['task']}, {doc['metric']}, {backbone} {size} px, {epochs} epochs{group}"


def run_one(name: str, py: str) -> dict:
    folder, options, hand = COMPETITIONS[name]
    config = Path("configs/init") / f"init-{name}.yaml"
    if not config.is_file():
        cmd = [py, "-m", "pipeline", "init", folder, "--name", config.stem, "--configs", "configs/init", *options]
        subprocess.run(cmd, check=True)
    start = time.time()
    subprocess.run(["make", "--no-print-directory", "ensemble", f"CONFIG={config}", f"PY={py}"], check=True)
    minutes = (time.time() - start) / 60
    metric = yaml.safe_load(config.read_text())["metric"]
    plain, tta = cv(Path("runs") / config.stem, metric)
    hand_name = yaml.safe_load(Path(hand).read_text())["name"] if hand else None
    hand_plain, hand_tta = cv(Path("runs") / hand_name, metric) if hand_name else (None, None)
    return {
        "competition": name,
        "init wrote": chose(config),
        "CV (TTA)": tta,
        "CV (no TTA)": plain,
        "hand-written": f"{hand_name}: {hand_tta:.4f} ({hand_plain:.4f} no TTA)" if hand_plain else (hand or "none"),
        "minutes": f"{minutes:.1f}",
    }


def markdown(rows: list[dict]) -> str:
    show = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(show(v) for v in r.values()) + " |" for r in rows]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(COMPETITIONS))
    ap.add_argument("--out", default="bench/init-check.md")
    args = ap.parse_args()
    rows = []
    for name in args.only.split(","):
        rows.append(run_one(name, sys.executable))
        Path(args.out).write_text(markdown(rows))
        print(markdown(rows), flush=True)


if __name__ == "__main__":
    main()
