"""What training and inference share on the device: placement, precision, the forward pass."""

from __future__ import annotations

import os

import numpy as np
import torch

from .config import Runtime
from .errors import PipelineError


def pick_device(rt: Runtime) -> torch.device:
    if rt.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if rt.device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"runtime.device: {rt.device} asked for, but torch sees no GPU")
    return torch.device(rt.device)


def num_workers(rt: Runtime, device: torch.device) -> int:
    if rt.num_workers is not None:
        return rt.num_workers
    # On a CPU the loader's processes would take cores from the model; decoding is cheap by comparison.
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0


def prepare(model: torch.nn.Module, device: torch.device, rt: Runtime) -> torch.nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def to_input(x: torch.Tensor, device: torch.device, rt: Runtime) -> torch.Tensor:
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    return x.to(device, non_blocking=True, memory_format=fmt)


def autocast(device: torch.device, rt: Runtime):
    return torch.autocast(device.type, dtype=getattr(torch, rt.amp_dtype), enabled=rt.amp and device.type == "cuda")


def grad_scaler(device: torch.device, rt: Runtime) -> torch.amp.GradScaler:
    """Loss scaling, which float16 needs and bfloat16 does not; a no-op when disabled."""
    on = rt.amp and device.type == "cuda" and rt.amp_dtype == "float16"
    return torch.amp.GradScaler(device.type, enabled=on)


@torch.inference_mode()
def activate(logits: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """Probabilities from logits: softmax over classes, or a sigmoid per label."""
    return logits.float().sigmoid() if multilabel else logits.float().softmax(-1)


def predict(model: torch.nn.Module, loader, device: torch.device, rt: Runtime, multilabel: bool = False) -> np.ndarray:
    """Probabilities, (N, C), in the loader's order."""
    model.eval()
    out = []
    for x, _ in loader:
        with autocast(device, rt):
            logits = model(to_input(x, device, rt))
        out.append(activate(logits, multilabel).cpu())
    return torch.cat(out).numpy()
