"""Identification as retrieval on the dogs set: the CV and test MAP@5 of each head, beside the constant
answer and ImageNet embeddings with no training.

Usage: python bench/retrieval_cv.py [--config configs/dogs.yaml] [--heads linear,arcface,...] [--out FILE]
                                    [--set key=value ...]      (make bench-retrieval)
       python bench/retrieval_cv.py --classification configs/clothing.yaml [--heads ...] [--out FILE]

Rows, all on the one folds file (folds.new_share of the rows are of dogs wholly in one fold):
  new_individual everywhere   the constant answer
  ImageNet embeddings         the backbone's pretrained pooled features, nearest neighbours, no training
  <head>                      make train, infer, ensemble of the config with model.head=<head>
Every CV figure has the new-individual threshold cross-fitted (pipeline/retrieval.py). The test
MAP@5 reads ../shared/competitions/dogs-test-labels.csv after the fact (bench/score.py), never to
choose anything; minutes are wall-clock of train + infer on this machine, one process at a time.

--classification: the heads as few-shot classification on a classification config (a margin head
predicts by its cosine logits): OOF and test accuracy, overall and on the tail (the classes with
fewer than TAIL training images), the test's labels read after the fact.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ablation import markdown
from score import hidden_retrieval

from pipeline import engine, heads, retrieval, tta
from pipeline.cache import run_cache
from pipeline.competition import read_competition
from pipeline.config_files import load_config
from pipeline.data import DataConfig
from pipeline.metrics import k_of
from pipeline.models import create_model, data_config
from pipeline.submission import build_guesses

HEADS = ("linear", "arcface", "subcenter_arcface", "cosface")
TAIL = 100  # a class with fewer training images is the long tail


def test_map(cfg, submission: Path) -> str:
    d = cfg.data
    labels = Path(d.root).parent / f"{Path(d.root).name}-test-labels.csv"
    text = hidden_retrieval(submission, labels, d.path(d.train_csv), d.id_col, d.label_col, d.new_individual)
    return text.split(";")[0].removeprefix("MAP@5 ")


def pretrained_row(cfg, out_dir: Path) -> tuple[dict, dict]:
    """ImageNet embeddings (the backbone's pooled features, model.global_pool as configured but no
    neck or head), nearest neighbours per fold as infer finds them; and the constant's row."""
    start = time.time()
    comp, d, k = read_competition(cfg), cfg.data, k_of(cfg.metric)
    m = cfg.model.model_copy(update={"head": "linear", "embedding_size": None})
    device = engine.pick_device(cfg.runtime)
    model = engine.prepare(create_model(m, len(comp.classes)), device, cfg.runtime).eval()
    dc: DataConfig = data_config(model, cfg.model.img_size)
    views = tta.make_views(dc.size, cfg.infer.tta)
    source = run_cache(cfg, dc, comp.every_image)

    def embed(paths):
        e = tta.predict_views(heads.Embedder(model), paths, dc, views, cfg.infer.batch_size, device, cfg.runtime,
                              heads.Unit, source)  # fmt: skip
        return retrieval.unit_mean(e)

    train, test = embed(comp.paths), embed(comp.test_paths)
    folds, y, n = comp.folds["fold"].to_numpy(), comp.targets, len(comp.classes)
    oof = np.full((len(y), n), retrieval.ABSENT, np.float32)
    for f in np.unique(folds):
        v = folds == f
        oof[v] = retrieval.similarities(train[v], train[~v], y[~v], n)
    choice = retrieval.choose(y, oof, folds, k, d.new_individual is not None)
    table = retrieval.similarities(test, train, y, n)
    cells = retrieval.spell(retrieval.decode(table, k, choice.threshold), comp.classes, d.new_individual)
    path = out_dir / f"{cfg.name}-imagenet.csv"
    sample = comp.sample
    build_guesses(sample, sample[d.sample_id], cells, d.sample_id, d.path(d.sample_submission)).to_csv(
        path, index=False
    )
    const = out_dir / f"{cfg.name}-constant.csv"
    sample.assign(**{sample.columns[1]: d.new_individual}).to_csv(const, index=False)
    minutes = (time.time() - start) / 60
    return (
        {"model": f"'{d.new_individual}' everywhere", "cv": choice.new_everywhere, "test": test_map(cfg, const),
         "minutes": 0.0},
        {"model": f"ImageNet embeddings ({cfg.model.backbone}, no training)", "cv": choice.cross_fitted,
         "cv_without_new": choice.without_new, "test": test_map(cfg, path), "minutes": round(minutes, 1)},
    )  # fmt: skip


def run_head(config: str, head: str, extra: list[str], out_dir: Path):
    """Train, infer and ensemble the config with model.head=<head> as a user runs them: the
    effective config, the run's name and the minutes of train + infer."""
    sets = [f"name={load_config(config).name}-{head.replace('_', '-')}", f"model.head={head}", *extra]
    name = load_config(config, sets).name  # a name=... in `extra` wins
    start = time.time()
    for stage in ("train", "infer"):
        subprocess.run([sys.executable, "-m", "pipeline", stage, config, *sets], check=True)
    minutes = (time.time() - start) / 60
    ensemble = [sys.executable, "-m", "pipeline", "ensemble", f"runs/{name}", "--out-dir", str(out_dir)]
    subprocess.run(ensemble, check=True)
    return load_config(config, sets), name, minutes


def head_row(config: str, head: str, extra: list[str], out_dir: Path) -> dict:
    """A head's row: the ensemble's cross-fitted CV, the test MAP@5."""
    cfg, name, minutes = run_head(config, head, extra, out_dir)
    summary = pd.read_json(out_dir / f"{name}.json", typ="series")
    return {
        "model": f"{head} head",
        "cv": summary["cv"][name],
        "test": test_map(cfg, out_dir / f"{name}.csv"),
        "minutes": round(minutes, 1),
    }


def classification_row(config: str, head: str, extra: list[str], out_dir: Path) -> dict:
    """A classification config trained with model.head=<head>: accuracy overall and on the tail."""
    cfg, name, minutes = run_head(config, head, extra, out_dir)
    d = cfg.data
    oof = pd.read_csv(f"runs/{name}/oof.csv")
    classes = [c for c in oof.columns if c not in (d.id_col, "fold", d.label_col)]
    counts = oof[d.label_col].value_counts()
    tail = set(counts[counts < TAIL].index)
    right = np.asarray(classes)[oof[classes].to_numpy().argmax(1)] == oof[d.label_col]
    labels = Path(d.root).parent / f"{Path(d.root).name}-test-labels.csv"
    truth = pd.read_csv(labels).set_index(d.id_col)[d.label_col]
    sub = pd.read_csv(out_dir / f"{name}.csv").set_index(d.sample_id)[d.label_col].loc[truth.index]
    test_right, test_tail = sub == truth, truth.isin(tail)
    return {
        "head": head, "cv_accuracy": right.mean(), f"cv_tail (<{TAIL})": right[oof[d.label_col].isin(tail)].mean(),
        "test_accuracy": test_right.mean(), "test_tail": test_right[test_tail].mean(), "minutes": round(minutes, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/dogs.yaml")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides for every trained row")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--classification", metavar="CONFIG", help="the heads as classification on this config")
    args = ap.parse_args()
    out_dir = Path("submissions/bench-retrieval")
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.classification:
        subprocess.run([sys.executable, "-m", "pipeline", "folds", args.classification], check=True)
        rows = []
        for head in filter(None, args.heads.split(",")):
            rows.append(classification_row(args.classification, head, args.set, out_dir))
            print(markdown(pd.DataFrame(rows)), flush=True)
        if args.out:
            Path(args.out).write_text(markdown(pd.DataFrame(rows)))
        return
    subprocess.run([sys.executable, "-m", "pipeline", "folds", args.config], check=True)
    rows = [] if args.no_baselines else list(pretrained_row(load_config(args.config, args.set), out_dir))
    for head in filter(None, args.heads.split(",")):
        rows.append(head_row(args.config, head, args.set, out_dir))
        print(markdown(pd.DataFrame(rows)), flush=True)
    text = markdown(pd.DataFrame(rows))
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
