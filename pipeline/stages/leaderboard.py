"""Every experiment under runs/ side by side: runs/leaderboard.csv and runs/leaderboard.html.

Usage: python -m pipeline leaderboard [RUNS_DIR] [--out-dir DIR]      (make leaderboard)

It only reads what the stages wrote: each run's config.yaml, its folds' oof.csv and history.csv
(CV without TTA: `cv` on all OOF rows at once, as ensemble reports it, `fold_mean` and `cv_std`
over the folds' own scores; training time), infer's oof.csv, tta.csv and
calibration.json (CV with TTA, the temperature), its live locks (running), and the stamps against
the config file its last stage ran from (stale: that file now asks for other settings).
Runs of different folds files, fold counts or metrics cannot be compared on one CV: each such
group is a table of its own, sorted best first by the metric. `corr_best` is the correlation of a
run's OOF predictions with the group's best run's, the diversity an ensemble feeds on.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import budget, pages
from ..config import Config
from ..config_files import validate
from ..errors import PipelineError
from ..io import write_csv, write_text
from ..lock import running
from ..metrics import higher_is_better
from ..runs import RunDir
from ..stamps import stamp_path
from ..upstream import oof_scores, read_oof

SHOWN_DIFFERENCES = 6  # the settings column names at most this many differing keys
NOT_SETTINGS = ("name", "runs_dir", "runtime.", "data.root", "data.name", "folds.dir")


@dataclass
class Entry:
    """One run as the leaderboard sees it: its row, and its OOF predictions by id (or None)."""

    row: dict
    cfg: Config
    oof: pd.DataFrame | None


def source(run: RunDir) -> tuple[str, list[str]] | None:
    """The config file (and overrides) the run's latest stage ran from, read from provenance.json."""
    try:
        doc = json.loads(run.provenance.read_text())
    except (OSError, ValueError):
        return None
    entries = [e for e in doc.values() if isinstance(e, dict) and e.get("command")]
    if not entries:
        return None
    words = shlex.split(max(entries, key=lambda e: e.get("when", ""))["command"])
    for i, w in enumerate(words[:-1]):
        if w in ("train", "infer", "folds", "lr_find", "show_batch", "mine", "pseudo", "report"):
            rest = [x for x in words[i + 2 :] if "=" in x and not x.startswith("-")]
            return words[i + 1], rest
    return None


def status(cfg: Config, run: RunDir) -> str:
    """running | stale | finished | k/n folds | empty."""
    if running(run.root):
        return "running"
    n = cfg.folds.n_folds
    done = sum(run.fold_oof(k).is_file() for k in range(n))
    src = source(run)
    if done and src and Path(src[0]).is_file():
        try:
            now = validate(Config, src[0], src[1])
        except PipelineError:
            return "stale"  # its config no longer loads: not what made these outputs
        stages = ["train"] + (["infer"] if run.oof.is_file() else [])
        if now.name == cfg.name and not all(stamp_path(now, s).is_file() for s in stages):
            return "stale"
    if run.oof.is_file() and done == n:
        return "finished"
    return f"{done}/{n} folds" if done else "empty"


def fold_oof(cfg: Config, run: RunDir) -> pd.DataFrame | None:
    """The folds' own OOF predictions (validation at training, no TTA), those that exist."""
    parts = [read_oof(cfg, run.fold_oof(k)) for k in range(cfg.folds.n_folds) if run.fold_oof(k).is_file()]
    return pd.concat(parts, ignore_index=True) if parts else None


def tta_cv(cfg: Config, run: RunDir) -> float | None:
    """CV of infer's OOF (its TTA views merged, calibrated when it was)."""
    if not run.oof.is_file():
        return None
    return oof_scores(cfg, read_oof(cfg, run.oof), cfg.data.retrieval)["overall"]


def temperature(run: RunDir) -> str:
    try:
        report = json.loads(run.calibration.read_text())
    except (OSError, ValueError):
        return ""
    return f"T={report['temperature']:.2f}" + ("" if report.get("applied") else " (not applied)")


def histories(cfg: Config, run: RunDir) -> list[pd.DataFrame]:
    return [pd.read_csv(h) for k in range(cfg.folds.n_folds) if (h := run.history(k)).is_file()]


def train_minutes(history: list[pd.DataFrame]) -> float | None:
    """Minutes the folds' epochs took (history.csv's seconds), validation and checkpoints included."""
    return round(float(sum(h["seconds"].sum() for h in history)) / 60, 2) if history else None


def phase_sizes(cfg: Config, history: list[pd.DataFrame]) -> str:
    """Each phase's training size, as the first fold trained it (a null size: the backbone's own)."""
    if history and {"phase", "img_size"} <= set(history[0].columns):
        return " ".join(str(v) for v in history[0].groupby("phase")["img_size"].first())
    return " ".join(str(p.img_size or cfg.model.img_size or "-") for p in cfg.train.phases)


def epochs(cfg: Config) -> int:
    """The epochs of a fold: runtime.budget's decision when it made one (budget.json)."""
    doc = budget.read(cfg)
    return sum(doc["epochs"]) if doc else cfg.train.epochs


def read_entry(root: Path) -> Entry | None:
    """A run folder that a stage has written (its config.yaml loads), else None."""
    run = RunDir(root)
    try:
        cfg = validate(Config, run.config)
    except PipelineError:
        return None
    oof, history = fold_oof(cfg, run), histories(cfg, run)
    if cfg.data.retrieval and run.oof.is_file():  # ranked by the guesses it submits: infer's nearest neighbours
        oof = read_oof(cfg, run.oof)
    per = oof_scores(cfg, oof, cfg.data.retrieval and run.oof.is_file()) if oof is not None else {}
    folds = [v for k, v in per.items() if k != "overall"]
    row = {
        "run": root.name,
        "competition": cfg.data.competition,
        "backbone": cfg.model.backbone,
        "img_size": cfg.model.img_size,
        "train_sizes": phase_sizes(cfg, history),
        "epochs": epochs(cfg),
        "cv": per.get("overall"),
        "fold_mean": float(np.mean(folds)) if folds else None,
        "cv_std": float(np.std(folds)) if len(folds) > 1 else None,
        "folds": " ".join(f"{v:.4f}" for v in folds),
        "tta_cv": tta_cv(cfg, run),
        "calibration": temperature(run),
        "train_min": train_minutes(history),
        "status": status(cfg, run),
    }
    return Entry(row, cfg, oof)


def settings_of(cfg: Config) -> dict:
    """key -> value, sections and lists of sections spelled out (phases.1.lr), other lists whole."""

    def walk(v, key: str):
        if isinstance(v, dict) and v:
            for k, x in v.items():
                yield from walk(x, f"{key}.{k}" if key else k)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                yield from walk(x, f"{key}.{i}")
        else:
            yield key, json.dumps(v, separators=(",", ":")) if isinstance(v, list) else v

    return {k: v for k, v in walk(cfg.model_dump(mode="json"), "") if not k.startswith(NOT_SETTINGS)}


def differing(entries: list[Entry]) -> list[str]:
    """Per run, the settings whose value is not the same in every run of the table, as key=value
    (the first section's name dropped: train.phases.1.lr reads phases.1.lr)."""
    flats = [settings_of(e.cfg) for e in entries]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    varied = [k for k in keys if len({json.dumps(f.get(k, "-")) for f in flats}) > 1 and k != "model.backbone"]
    shown = varied[:SHOWN_DIFFERENCES]
    return [" ".join(f"{k.split('.', 1)[-1]}={f[k]}" for k in shown if k in f) for f in flats]


def correlations(entries: list[Entry], best: Entry) -> list[float | None]:
    """Pearson correlation of each run's OOF predictions with the best run's, on the rows both have."""
    d = best.cfg.data
    out = []
    for e in entries:
        if e.oof is None or best.oof is None:
            out.append(None)
            continue
        cols = [c for c in best.oof.columns if c not in (d.id_col, "fold", d.label_col) and c in e.oof.columns]
        both = best.oof.merge(e.oof, on=d.id_col, suffixes=("", "_x"))
        a = both[cols].to_numpy(dtype=float).ravel()
        b = both[[c + "_x" for c in cols]].to_numpy(dtype=float).ravel()
        out.append(float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else None)
    return out


def group_key(cfg: Config) -> str:
    return f"{cfg.folds_file} ({cfg.folds.n_folds} folds), {cfg.metric}"


def table(entries: list[Entry]) -> pd.DataFrame:
    """One group's rows: the runs with every fold trained ranked by CV, then those with some folds
    (a search's trials: fold 0 alone is no CV to rank against five), then those with none; with
    the settings that differ and each run's OOF correlation with the best ranked run."""
    metric, direction = entries[0].cfg.metric, -1 if higher_is_better(entries[0].cfg.metric) else 1

    def order(e: Entry):
        whole = e.oof is not None and e.oof["fold"].nunique() == e.cfg.folds.n_folds
        return (0 if whole else 1 if e.row["cv"] is not None else 2, direction * (e.row["cv"] or 0.0))

    ordered = sorted(entries, key=order)
    ranked = [e for e in ordered if order(e)[0] == 0]
    rows = [dict(e.row) for e in ordered]
    for row, text in zip(rows, differing(ordered)):
        row["settings"] = text
    best = ranked[0] if ranked else next((e for e in ordered if e.row["cv"] is not None), None)
    corr = correlations(ordered, best) if best else [None] * len(ordered)
    for row, c in zip(rows, corr):
        row["corr_best"] = c
    df = pd.DataFrame(rows)
    for col in ("cv", "fold_mean", "cv_std", "tta_cv", "corr_best", "train_min"):
        df[col] = pd.to_numeric(df[col])
    df.insert(0, "rank", pd.array([i + 1 if i < len(ranked) else None for i in range(len(rows))], "Int64"))
    df.insert(1, "group", group_key(entries[0].cfg))
    df.insert(2, "metric", metric)
    return df


def build(runs_dir: Path) -> list[pd.DataFrame]:
    """One table per folds file, fold count and metric, the group with the most runs first."""
    entries = [e for p in sorted(Path(runs_dir).iterdir()) if p.is_dir() and (e := read_entry(p))]
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(group_key(e.cfg), []).append(e)
    return [table(g) for g in sorted(groups.values(), key=len, reverse=True)]


SHOWN = [
    "rank",
    "run",
    "backbone",
    "train_sizes",
    "cv",
    "fold_mean",
    "cv_std",
    "tta_cv",
    "corr_best",
    "train_min",
    "status",
    "settings",
]


PAGE_COLUMNS = ["rank", "run", "backbone", "train_sizes", "epochs", "cv", "fold_mean", "cv_std", "folds", "tta_cv",
                "calibration", "corr_best", "train_min", "status", "settings"]  # fmt: skip
WIDE = "<style>body{max-width:none}.t td{white-space:nowrap}</style>"  # a row per run, however long


def html_page(tables: list[pd.DataFrame], runs_dir: Path) -> str:
    parts = [WIDE, f"<h1>Leaderboard of {pages.esc(runs_dir)}</h1>", f"<p>{time.strftime('%Y-%m-%d %H:%M')}</p>"]
    for df in tables:
        best = "higher" if higher_is_better(df["metric"].iloc[0]) else "lower"
        parts.append(f"<h2>{pages.esc(df['group'].iloc[0])}: {best} is better</h2>")
        parts.append(pages.table(df[PAGE_COLUMNS]))
    return pages.page(f"leaderboard: {runs_dir}", parts)


def main(runs_dir: str | Path = "runs", out_dir: str | Path | None = None) -> list[pd.DataFrame]:
    """Write <out_dir>/leaderboard.csv (every group, a group column) and .html; print each table."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise PipelineError(f"{runs_dir}: no such folder of runs")
    out = Path(out_dir or runs_dir)
    tables = build(runs_dir)
    if not tables:
        raise PipelineError(f"{runs_dir}: no experiment folder with a config.yaml (run make train first)")
    write_csv(out / "leaderboard.csv", pd.concat(tables, ignore_index=True))
    write_text(out / "leaderboard.html", html_page(tables, runs_dir))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        for df in tables:
            print(f"{df['group'].iloc[0]}:")
            print(df[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    print(f"-> {out / 'leaderboard.csv'}, {out / 'leaderboard.html'}")
    return tables
