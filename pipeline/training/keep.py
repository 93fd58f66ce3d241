"""Which epoch a fold keeps: each epoch's validation and its scores, the raw weights' or the EMA's offer
(train.monitor, train.ema.keep), best.pt when the offer beats the kept one, and SWA's average
at the end (train.swa), validated and kept in place of any epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import distributed, engine
from ..config import Config
from ..io import write_csv
from ..metrics import accuracy, higher_is_better, log_loss, score
from ..targets import prediction_loss
from .checkpoints import save_best, save_state
from .fold import FoldRun, Kept, epoch_seed, phase_size
from .loaders import phase_loader


def metric_column(cfg: Config) -> tuple[str, bool]:
    """The history column of the competition's metric (train.monitor: metric), and whether higher
    is better: a log-loss is valid_loss, accuracy valid_accuracy, any other valid_<metric>."""
    m = cfg.metric
    named = {} if cfg.data.numeric else {"log_loss": "valid_loss", "accuracy": "valid_accuracy"}
    return named.get(m, f"valid_{m}"), higher_is_better(m)


def score_row(run: FoldRun, y: np.ndarray, probs: np.ndarray, prefix: str) -> dict:
    """An epoch's validation scores: for classes the log-loss and accuracy (and the metric under
    train.monitor: metric); for a number the training loss and the metric (an ordinal task's
    kappa with each prediction rounded to its nearest grade; infer fits the cut-points)."""
    spec, cfg = run.spec, run.spec.cfg
    if cfg.data.numeric:
        return {
            f"{prefix}valid_loss": prediction_loss(run.loss_fn, spec.scale, probs, y),
            f"{prefix}valid_{cfg.metric}": score(cfg.metric, y, probs, spec.grades),
        }
    row = {f"{prefix}valid_loss": log_loss(y, probs), f"{prefix}valid_accuracy": accuracy(y, probs)}
    key, _ = metric_column(cfg)
    if cfg.train.monitor == "metric" and prefix + key not in row:
        row[prefix + key] = score(cfg.metric, y, probs)
    return row


def second_score(row: dict, prefix: str = "") -> str:
    """The row's score besides the loss, as 'valid_acc 0.9' (or 'valid_rmse 1.2'), for the log."""
    key = next(k for k in row if k.startswith(prefix + "valid_") and k != prefix + "valid_loss")
    return f"{key.replace('accuracy', 'acc')} {row[key]:.4f}"


def offered(run: FoldRun, row: dict, probs: np.ndarray, ema_probs: np.ndarray | None) -> tuple[float, str, np.ndarray]:
    """The epoch's score (train.monitor), weights and probabilities: the raw weights', or with
    train.ema the EMA's too, as ema.keep says (best: whichever scores better). Records the choice."""
    t = run.spec.cfg.train
    keep = t.ema.keep if t.ema else "raw"
    candidates = [("raw", "", probs)] + ([("ema", "ema_", ema_probs)] if ema_probs is not None else [])
    if keep != "best":
        candidates = [c for c in candidates if c[0] == keep]

    def score(prefix: str) -> float:
        if t.monitor == "metric":
            key, up = metric_column(run.spec.cfg)
            return row[prefix + key] if up else -row[prefix + key]
        if t.monitor == "accuracy":
            return row[prefix + "valid_accuracy"]
        return -row[prefix + "valid_loss"] if t.monitor == "loss" else row["epoch"]

    name, prefix, chosen = max(candidates, key=lambda c: (score(c[1]), c[0] == "ema"))
    row["weights"] = name
    return score(prefix), name, chosen


def keep_and_save(run: FoldRun, row: dict, offer: tuple[float, str, np.ndarray], p: int, schedule) -> None:
    """best.pt when this epoch's offer beats the kept one (train.monitor), then last.pt: by
    process 0 only."""
    score, weights, probs = offer
    state = run.state
    better = state.kept is None or score > state.kept.score
    if better:
        state.kept = Kept(score, row["epoch"], probs, weights)
    if distributed.is_main():
        if better:
            save_best(run, state.ema.module if weights == "ema" else state.model, row, weights)
        save_state(run, row["epoch"], p, schedule, done=row["epoch"] == run.spec.cfg.train.epochs - 1)
    distributed.barrier()


@torch.inference_mode()
def pooled_features(run: FoldRun, valid_dl) -> torch.Tensor | None:
    """In a head-only phase with BatchNorm as pretrained nothing before the classifier changes, so
    the validation images' pooled features are computed once per phase and each epoch validates
    the classifier alone. None for a model whose classifier does not take timm's pre-logits (the
    first batch is checked against the whole forward pass)."""
    spec, model, out = run.spec, run.state.model.eval(), []
    rt = spec.cfg.runtime
    for x, _ in valid_dl:
        x = engine.to_input(x, spec.device, rt)
        with engine.autocast(spec.device, rt):
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            if not out and not torch.allclose(model.get_classifier()(f).float(), model(x).float(), atol=1e-3):
                return None
        out.append(f)
    return torch.cat(out)


def validate(run: FoldRun, valid_dl, pooled: torch.Tensor | None = None, model=None) -> np.ndarray:
    """The fold's validation probabilities by `model` (the training weights unless given: the EMA's
    or the SWA's), each process predicting its share under DDP; from the pooled features when the
    phase has them (pooled_features)."""
    spec, rt = run.spec, run.spec.cfg.runtime
    if pooled is None:
        probs = torch.from_numpy(engine.predict(model or run.net, valid_dl, spec.device, rt, spec.act))
    else:
        head = (model or run.state.model).eval().get_classifier()
        with torch.inference_mode(), engine.autocast(spec.device, rt):
            probs = engine.activate(head(pooled), spec.act).cpu()
    return distributed.gather_rows(probs, len(spec.valid_rows)).numpy()


def finish_swa(run: FoldRun, valid_dl, y_val) -> None:
    """With train.swa the fold keeps the average: its BatchNorm statistics recomputed on the last
    phase's training images (augmented, as torch's recipe does; when that phase holds BatchNorm
    frozen, its statistics are kept instead), then validated and
    saved as best.pt, with a history row of its own (epoch = the number of epochs)."""
    spec, state, t = run.spec, run.state, run.spec.cfg.train
    if state.swa is None or state.kept.weights == "swa":
        return
    p = len(t.phases) - 1
    batch = next(r["batch_size"] for r in reversed(state.history) if r["phase"] == p)  # no new search
    loader = phase_loader(run, p, batch)
    if t.phases[p].bn_eval:
        state.swa.take_buffers(state.model)
    else:
        loader.sampler.set_epoch(epoch_seed(spec, t.epochs))
        state.swa.recompute_bn(engine.to_input(x, spec.device, spec.cfg.runtime, spec.final_dc) for x, _ in loader)
        distributed.pool_bn_stats(state.swa.module)  # each process saw its share of the images
    probs = validate(run, valid_dl, None, state.swa.module)
    row = dict(
        epoch=t.epochs,
        phase=p,
        img_size=phase_size(t.phases[p], spec.final_dc),
        frozen=t.phases[p].frozen,
        batch_size=loader.batch_size * distributed.world_size(),
        train_loss=float("nan"),
        **score_row(run, y_val, probs, ""),
        weights="swa",
    )
    state.history.append(row)
    state.kept = Kept(float("nan"), t.epochs, probs, "swa")
    if distributed.is_main():
        save_best(run, state.swa.module, row, "swa")
        save_state(run, t.epochs - 1, p, None, done=True)
        write_csv(spec.paths.history(spec.fold), pd.DataFrame(state.history))
        if state.board:
            state.board.epoch(row)
    distributed.barrier()
    distributed.say(
        f"fold {spec.fold}: SWA of the last {state.swa.count} epochs, BatchNorm recomputed: "
        f"valid_loss {row['valid_loss']:.4f} {second_score(row)} (kept)"
    )
