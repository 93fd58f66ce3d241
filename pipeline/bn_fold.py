"""A frozen backbone's BatchNorm folded into the convolutions before it, for head-only phases.

In a head-only phase the backbone's weights and BatchNorm statistics stay put, so each
BatchNorm (eval mode) is one per-channel scale and shift of the convolution's output: folded into
the convolution's weight and bias, the same function costs a sixth less of a frozen step on a CPU
(bench/speed.py). The training step runs through a copy of the model whose trainable parameters
and classifier are the model's own objects, so the optimizer, EMA and checkpoints see the model
unchanged; the copy is dropped when the phase ends.
"""

from __future__ import annotations

import contextlib
import copy

import torch

_BN = torch.nn.modules.batchnorm._BatchNorm


class ActOnly(torch.nn.Module):
    """What is left of a BatchNorm with its activation (timm's BatchNormAct2d) once folded."""

    def __init__(self, bn: torch.nn.Module):
        super().__init__()
        self.drop = getattr(bn, "drop", torch.nn.Identity())
        self.act = getattr(bn, "act", torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _frozen(m: torch.nn.Module) -> bool:
    return not any(p.requires_grad for p in m.parameters(recurse=False))


def conv_bn_pairs(model: torch.nn.Module, probe: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, BatchNorm) module names where the BatchNorm, outside the classifier, normalises the
    very tensor that convolution made, each called once in a forward of `probe`, both frozen."""
    head = set(model.get_classifier().modules())
    made, calls, taken, hooks = {}, {}, {}, []
    names = {m: n for n, m in model.named_modules()}

    def conv_out(m, _, out):
        calls[m] = calls.get(m, 0) + 1
        made[id(out)] = (m, out)  # the tensor kept too, so its id is not reused

    def bn_in(m, args):
        calls[m] = calls.get(m, 0) + 1
        taken[m] = made.get(id(args[0]), (None,))[0]

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_out))
        elif isinstance(m, _BN) and m not in head and m.running_var is not None:
            hooks.append(m.register_forward_pre_hook(bn_in))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    return [
        (names[c], names[bn])
        for bn, c in taken.items()
        if c is not None and calls[bn] == calls[c] == 1 and _frozen(c) and _frozen(bn)
    ]


def fold_into(conv: torch.nn.Conv2d, bn: torch.nn.Module) -> None:
    """conv's weight and bias (made when it had none) take bn's eval-mode scale and shift."""
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        shift = -bn.running_mean * scale
        if bn.affine:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        bias = shift if conv.bias is None else conv.bias * scale + shift
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)  # keeps the weight's memory format
    conv.weight = torch.nn.Parameter(weight, requires_grad=False)
    conv.bias = torch.nn.Parameter(bias, requires_grad=False)


def folded_copy(model: torch.nn.Module, size: int, device: torch.device) -> torch.nn.Module | None:
    """A copy of `model` with its frozen BatchNorms folded, sharing every trainable parameter and the
    classifier with it; None when there is nothing to fold or the copy does not compute what the
    model does (a convolution's output also used elsewhere, a convolution that rescales its weight)."""
    was = model.training
    model.eval()
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        pairs = conv_bn_pairs(model, probe)
        if not pairs:
            return None
        shared = [p for p in model.parameters() if p.requires_grad] + list(model.get_classifier().modules())
        twin = copy.deepcopy(model, memo={id(o): o for o in shared})
        for conv, bn in pairs:
            fold_into(twin.get_submodule(conv), twin.get_submodule(bn))
            parent, _, leaf = bn.rpartition(".")
            setattr(twin.get_submodule(parent), leaf, ActOnly(twin.get_submodule(bn)))
        with torch.no_grad(), full_precision():
            want, got = model(probe).float(), twin.eval()(probe).float()
        if not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * (1 + want.abs().max().item())):
            print(
                "head-only steps run the model itself: its copy with BatchNorm folded does not compute what "
                "it does (a convolution's output used elsewhere too, or one that rescales its weight)",
                flush=True,
            )
            return None
        return twin
    finally:
        model.train(was)


@contextlib.contextmanager
def full_precision():
    """TF32 off while the copy is checked: on a GPU it rounds the two differently enough to fail."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cudnn = torch.backends.cudnn
        with cudnn.flags(cudnn.enabled, cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
