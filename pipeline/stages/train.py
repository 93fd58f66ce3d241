"""Stage 2: fine-tune a timm backbone on each fold, phase by phase; keep the best epoch's model.

Usage: python -m pipeline train CONFIG [key=value ...] [--fold K]      (make train [FOLD=K])

A fold runs the config's phases in order (say: head only at 128 px, then everything at 160 px,
then at 224 px) on one model and one optimizer. It writes runs/<name>/fold<K>/:
  last.pt      after every epoch: model, optimizer, schedule, scaler, epoch and phase
  best.pt      the kept epoch's unwrapped state_dict + config + classes + data config (for infer)
  history.csv  one row per epoch; curves.png plots it, with the phase boundaries
  oof.csv      the kept model's probabilities on fold K, written last: the fold is done
Run again after a crash or a kill, it resumes from last.pt; a finished fold is skipped.

On several GPUs, one fold's processes under torchrun (make train GPUS=N) train it with DDP:
  python -m torch.distributed.run --standalone --nproc_per_node=N -m pipeline train CONFIG --fold K

This file is the command line and the loop over folds; what a fold does is in pipeline/training/
(its __init__ lists the rooms).
"""

from __future__ import annotations

import pandas as pd

from .. import budget, distributed, progress
from ..competition import Competition, read_competition
from ..config import Config
from ..config_files import to_yaml
from ..errors import PipelineError, interrupts_say
from ..io import write_csv, write_text_if_changed
from ..labels import prob_frame
from ..runs import RunDir
from ..stamps import write_stamp
from ..targets import fit_scale
from ..training.checkpoints import best_kept, load_state, read_best, readable_csv, stopped_at
from ..training.epochs import run_phases
from ..training.fold import FoldRun, build

say = distributed.say


def train_fold(cfg: Config, comp: Competition, fold: int, folds_after: int = 0, probe: bool = False) -> None:
    """Train fold `fold` from its start, or from where last.pt left off; skip it when done."""
    run = build(cfg, comp, fold, folds_after=folds_after, estimate=True, probe=probe)
    paths, oof_path = run.spec.paths, run.spec.paths.fold_oof(fold)
    resume = load_state(run)
    best = read_best(run.spec) if resume is not None else None
    has_best, kept = best is not None, best_kept(best) if best is not None else None
    del best  # best.pt is mapped: let it go before the epochs replace it
    if resume is not None and resume.done:
        if not has_best:  # the kept epoch's weights are not in last.pt: train again
            say(f"fold {fold}: {paths.best(fold)} is missing or damaged; training the fold again")
            run, resume = build(cfg, comp, fold, folds_after=folds_after, estimate=True), None
        elif readable_csv(oof_path):  # else oof.csv is rewritten from last.pt below
            say(f"fold {fold}: already trained ({paths.last(fold)}); skipping")
            if distributed.is_main():  # Make reran this for a newer input (the folds file remade
                for f in (paths.best(fold), oof_path):  # the same): up to date now, as it
                    f.touch()  # would be had it trained
            return
    if distributed.is_main():
        oof_path.unlink(missing_ok=True)  # a stale one would mark an unfinished fold as done
    next_epoch = resume.epoch + 1 if resume else 0
    if distributed.is_main():
        run.state.board = progress.Board(paths.tensorboard(fold), next_epoch)
    if resume:
        say(f"fold {fold}: resuming after epoch {resume.epoch} from {paths.last(fold)}")
        if not has_best:  # deleted by hand, or by an older Makefile's Ctrl-C
            say(f"fold {fold}: {paths.best(fold)} is missing; the next epoch's model is kept in its place")
            run.state.kept = None
        elif kept is not None:  # the record written with the weights, whatever last.pt says
            run.state.kept = kept
    with interrupts_say(lambda: stopped_at(run.spec)):
        run_phases(run, next_epoch, resume)
        finish(run)


def finish(run: FoldRun) -> None:
    """curves.png, then oof.csv: the kept epoch's validation probabilities, written last."""
    from ..plots import plot_curves  # matplotlib only when a fold ends

    if not distributed.is_main():
        return
    spec, state, d = run.spec, run.state, run.spec.cfg.data
    if state.board is not None:
        state.board.close()
    title = f"{spec.cfg.name} fold {spec.fold}"
    plot_curves(pd.DataFrame(state.history), spec.paths.curves(spec.fold), title, kept=state.kept.epoch)
    valid = spec.valid_rows
    labels = {d.label_col: valid[d.label_col].to_list()}
    oof = prob_frame(valid[d.id_col], spec.classes, state.kept.probs, d.id_col, fold=spec.fold, **labels)
    write_csv(spec.paths.fold_oof(spec.fold), oof)  # written last: its presence means the fold is done


# ----------------------------------------------------------------------------- entry


def main(cfg: Config, fold: int | None = None) -> None:
    """Train every fold (or fold `fold`) of the effective config; runtime.budget decided first."""
    if fold is not None and not 0 <= fold < cfg.folds.n_folds:
        raise PipelineError(f"--fold {fold}: the folds file has folds 0..{cfg.folds.n_folds - 1}")
    comp = read_competition(cfg, check="train")  # every train and test image, before the first epoch
    if cfg.data.numeric:  # a fixed model.y_range that leaves out a training target: before any epoch
        fit_scale(cfg.model.y_range, comp.targets)
    todo = list(range(cfg.folds.n_folds)) if fold is None else [fold]
    cfg = within_budget(cfg, comp, todo[0])
    for i, k in enumerate(todo):
        # the folds still to train besides this one (under Make each fold is a process of its own)
        later = [j for j in range(cfg.folds.n_folds) if j != k and j not in todo[:i]]
        train_fold(cfg, comp, k, sum(not readable_csv(RunDir(cfg.run_dir).fold_oof(j)) for j in later))


def within_budget(cfg: Config, comp: Competition, fold: int) -> Config:
    """The effective config: cfg with the epochs runtime.budget allows (pipeline/budget.py), the
    run's decision, else measured now on the first steps of `fold`, which then trains from its
    start. A new decision rewrites the train stamp and the run's config.yaml, so Make, infer and
    every later stage compare against the epochs trained."""
    if cfg.runtime.budget is None:
        return cfg
    doc = budget.read(cfg)
    if doc is None:
        doc = decide_budget(cfg, comp, fold)
    say(budget.describe(cfg, doc))
    cfg = budget.applied(cfg, doc)
    if distributed.is_main():
        write_stamp(cfg, "train")
        write_text_if_changed(RunDir(cfg.run_dir).config, to_yaml(cfg))
    return cfg


def decide_budget(cfg: Config, comp: Competition, fold: int) -> dict:
    """Time the first steps of `fold` and decide the epochs (budget.json)."""
    run = RunDir(cfg.run_dir)
    started = [k for k in range(cfg.folds.n_folds) if run.last(k).is_file()]
    if started:
        raise PipelineError(
            f"runtime.budget: fold {started[0]} was started without it ({run.last(started[0])}); delete "
            f"{run.root}/fold*/ to train every fold within it, or drop runtime.budget"
        )
    if distributed.world_size() > 1:
        raise PipelineError("runtime.budget: the speed is measured in one process; train one fold without GPUS= first")
    try:
        train_fold(cfg, comp, fold, probe=True)
        return budget.decide(cfg, None)  # an epoch too short to time: trained as written
    except budget.Measured as m:
        return budget.decide(cfg, m)
