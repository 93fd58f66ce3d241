"""Can the model overfit one batch? The classic check before a day of training.

Usage: python -m pipeline sanity CONFIG [key=value ...]      (make sanity)

Takes one batch (train.batch_size, at most 32) of fold 0's training images, with no augmentation
(the eval transform at model.img_size) and no regularisation (no dropout, label smoothing or
weight decay), and trains every layer of the configured backbone on it alone with AdamW. A healthy
set-up drives the loss close to zero within a few dozen steps; wrong labels, a head that cannot
learn or a broken transform do not, and the command fails (exit 2) saying so. Writes nothing.
"""

from __future__ import annotations

import torch

from .. import engine
from ..competition import read_competition
from ..config import Config
from ..data import ImageDataset, eval_transform
from ..errors import PipelineError
from ..folds_file import training_rows
from ..losses import make_loss
from ..models import create_model, data_config
from ..targets import fit_scale

STEPS = 60
LR = 1e-3
PASS_RATIO = 0.1  # the loss must fall to a tenth of where it started ...
PASS_LOSS = 0.1  # ... and below this


def overfit(model: torch.nn.Module, batch, steps: int, lr: float, loss_fn, device, rt) -> list[float]:
    """The loss at each of `steps` AdamW updates on the batches `batch(step)` returns."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        x, y = batch(step)
        with engine.autocast(device, rt):
            loss = loss_fn(model(engine.to_input(x, device, rt)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def verdict(losses: list[float], n: int) -> str:
    """The message of a failed check, or '' when the loss fell close to zero."""
    first, last = losses[0], min(losses[-5:])
    if last <= PASS_RATIO * first and last <= PASS_LOSS:
        return ""
    return (
        f"sanity: one batch of {n} images did not overfit: the loss went from {first:.3f} to {last:.3f} "
        f"in {len(losses)} steps (a healthy set-up reaches {PASS_LOSS}); check the labels (data.label_col), "
        "the learning rates and that the head is trainable"
    )


def main(cfg: Config) -> list[float]:
    # a number: mse, whose floor is 0 (bce's is the targets' own entropy), on the batch's own scale
    loss = "mse" if cfg.data.numeric else "ce"
    cfg = cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"drop_rate": 0.0}),
            "train": cfg.train.model_copy(update={"label_smoothing": 0.0, "loss": loss}),
        }
    )
    comp = read_competition(cfg)
    classes = comp.classes
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, len(classes), cfg.data.numeric)
    dc = data_config(model, cfg.model.img_size)
    model = engine.prepare(model, device, cfg.runtime)
    n = min(32, cfg.train.batch_size if isinstance(cfg.train.batch_size, int) else 32)
    images = comp.images(training_rows(cfg, comp.folds, 0).iloc[:n])
    ds = ImageDataset(images.paths, images.targets, eval_transform(dc))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    scale = fit_scale(cfg.model.y_range, images.targets) if cfg.data.numeric else None
    y = torch.tensor(scale.normalise(images.targets) if scale else images.targets)
    losses = overfit(model, lambda step: (x, y), STEPS, LR, make_loss(cfg, scale=scale), device, cfg.runtime)
    message = verdict(losses, len(ds))
    if message:
        raise PipelineError(message)
    print(
        f"sanity: one batch of {len(ds)} images overfits: loss {losses[0]:.3f} -> {min(losses[-5:]):.4f} "
        f"in {STEPS} steps"
    )
    return losses
