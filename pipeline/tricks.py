"""The competitor's training tricks, each a config switch (train.ema, train.swa, train.mixup,
train.rdrop, train.fgm): the pieces the training loop (stages/train.py) calls around its steps.

Each is off unless its config key is set; bench/ablation.py measures what each one does.
"""

from __future__ import annotations

import contextlib

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3, unwrap_model
from torch.optim.swa_utils import AveragedModel, update_bn

from .config import Ema, Fgm, Swa
from .config import Mixup as MixupCfg

# ----------------------------------------------------------------------------- EMA of weights


class WeightEma:
    """timm's ModelEmaV3 and the count of optimizer updates it has seen (its decay warms up with
    that count, so last.pt keeps it and a resumed fold continues the same average)."""

    def __init__(self, model: torch.nn.Module, cfg: Ema):
        self.ema = ModelEmaV3(unwrap_model(model), decay=cfg.decay, use_warmup=cfg.warmup)
        self.updates = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.ema.module

    def update(self, model: torch.nn.Module) -> None:
        """After an optimizer update: ema = decay * ema + (1 - decay) * weights."""
        self.updates += 1
        self.ema.update(unwrap_model(model), step=self.updates)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models differ at most in their classifier (the EMA of a head-only phase that
    began from the raw weights): then the raw model's pooled features serve both."""
    head = {id(p) for p in a.get_classifier().parameters()}
    body = [(p, q) for p, q in zip(a.parameters(), b.parameters()) if id(p) not in head]
    return all(torch.equal(p, q) for p, q in body + list(zip(a.buffers(), b.buffers())))


# ----------------------------------------------------------------------------- SWA


class WeightSwa:
    """torch's AveragedModel: the equal-weight average of the model at the end of each of the
    last train.swa.epochs epochs; BatchNorm statistics are recomputed for it at the end."""

    def __init__(self, model: torch.nn.Module, cfg: Swa):
        self.avg, self.epochs = AveragedModel(unwrap_model(model)), cfg.epochs

    @property
    def module(self) -> torch.nn.Module:
        return self.avg.module

    @property
    def count(self) -> int:
        return int(self.avg.n_averaged)

    def update(self, model: torch.nn.Module) -> None:
        self.avg.update_parameters(unwrap_model(model))

    def recompute_bn(self, batches) -> None:
        """BatchNorm statistics of the averaged weights, over `batches` (normalised images): the
        statistics of the averaged epochs' weights do not belong to their average."""
        update_bn(batches, self.module)

    def take_buffers(self, model: torch.nn.Module) -> None:
        """The model's BatchNorm statistics as they are (a last phase that holds them frozen)."""
        for mine, theirs in zip(self.module.buffers(), unwrap_model(model).buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return self.avg.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.avg.load_state_dict(state)


# ----------------------------------------------------------------------------- mixup and cutmix


def make_mixer(cfg: MixupCfg) -> Mixup:
    """timm's Mixup in batch mode (each image mixed with the batch's mirror image), without label
    smoothing: the loss smooths the mixed targets as it smooths any."""
    return Mixup(
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        prob=cfg.prob,
        switch_prob=cfg.switch_prob,
        mode="batch",
        label_smoothing=0.0,
    )


def mix(mixer: Mixup, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch (in place) and its targets: class indices, probability rows or multi-hot rows
    become probability rows; a number's targets (float, (N,)) are mixed by the same weights.
    timm's Mixup one-hot encodes indices only, so it is asked for the
    mixing matrix (the targets 0..n-1 over n classes give it) and the rows are mixed with that.
    An odd-sized batch (an epoch's last) is left as it is."""
    number = y.ndim == 1 and y.is_floating_point()  # a number's targets mix linearly, as one column
    if number:
        rows = y.float()[:, None]
    else:
        rows = torch.nn.functional.one_hot(y, num_classes).float() if y.ndim == 1 else y.float()
    if len(x) % 2:
        return x, rows[:, 0] if number else rows
    mixer.num_classes = len(x)
    x, matrix = mixer(x, torch.arange(len(x), device=x.device))
    mixed = matrix.to(rows.dtype) @ rows
    return x, mixed[:, 0] if number else mixed


# ----------------------------------------------------------------------------- FGM


def stem_weight(model: torch.nn.Module) -> torch.nn.Parameter:
    """The first convolution's (or patch embedding's) weight, named by timm's pretrained_cfg."""
    model = unwrap_model(model)
    first = model.pretrained_cfg.get("first_conv") or ""
    for name in (first, first + ".proj", first.removesuffix(".weight")):
        with contextlib.suppress(AttributeError):
            weight = model.get_submodule(name).weight
            if isinstance(weight, torch.nn.Parameter):
                return weight
    return next(p for p in model.parameters() if p.ndim == 4)


@contextlib.contextmanager
def perturbed(tensor: torch.Tensor, epsilon: float, per_sample: bool):
    """FGM: move `tensor` by epsilon along its normalised gradient (per image when `per_sample`,
    else over the whole tensor) for the adversarial pass inside, then put back its exact values.
    Yields whether there is a pass to make: not for a tensor without a gradient (a frozen stem, the
    same in every DDP process). A non-finite gradient (an fp16 overflow, whose step the scaler
    skips) moves nothing but still makes the pass, so every process runs the same collectives."""
    g = tensor.grad
    if g is None:
        yield False
        return
    g = torch.nan_to_num(g.float(), nan=0.0, posinf=0.0, neginf=0.0)
    norm = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.ndim - 1)) if per_sample else g.norm()
    backup = tensor.detach().clone()
    with torch.no_grad():
        tensor.add_((epsilon * g / (norm + 1e-12)).to(tensor.dtype))
    try:
        yield True
    finally:
        with torch.no_grad():
            tensor.copy_(backup)


def fgm_target(model: torch.nn.Module, x: torch.Tensor, cfg: Fgm) -> tuple[torch.Tensor, bool]:
    """What FGM perturbs, and whether per image: the input batch or the stem's weight."""
    return (x, True) if cfg.target == "input" else (stem_weight(model), False)
