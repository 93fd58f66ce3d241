"""What training and inference share on the device: placement, precision, the forward pass."""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np
import torch

from . import progress
from .config import Runtime
from .cores import cores, share_cores
from .errors import PipelineError

_claimed: list = []  # the lock file of the GPU this process took (held while it lives)


def free_gpu(count: int, lock_dir: str = "/tmp") -> int:
    """The first GPU no other pipeline process on this machine holds, so `make -j N train` on a
    machine with several GPUs gives each fold its own; waits on one when all are taken."""
    import fcntl

    def claim(i: int, wait: bool) -> bool:
        f = open(f"{lock_dir}/pipeline-gpu{i}.lock", "w")  # noqa: SIM115 (held open: the lock lives with it)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return False
        _claimed.append(f)
        return True

    free = next((i for i in range(count) if claim(i, wait=False)), None)
    if free is None:
        free = os.getpid() % count
        claim(free, wait=True)
    return free


def pick_device(rt: Runtime) -> torch.device:
    """runtime.device; auto: CUDA when torch sees a GPU (under torchrun, the process's own; with
    several and no torchrun, a free one), else the CPU."""
    if rt.device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        n = torch.cuda.device_count()
        return torch.device("cuda", free_gpu(n) if n > 1 else 0)
    if rt.device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"runtime.device: {rt.device} asked for, but torch sees no GPU")
    return torch.device(rt.device)


def setup(rt: Runtime, device: torch.device) -> None:
    """Backend switches: cudnn's autotuner unless runtime.deterministic; on a CPU, this process's
    share of the cores among the pipeline processes running now (cores.py)."""
    torch.backends.cudnn.benchmark = not rt.deterministic
    if rt.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else:
        share_cores(rt.cache_dir)


def num_workers(rt: Runtime, device: torch.device) -> int:
    if rt.num_workers is not None:
        return rt.num_workers
    if device.type == "cuda":
        return max(1, min(8, cores() // max(1, torch.cuda.device_count()) - 1))
    # On a CPU a worker process takes cycles from the model's threads: with the decode cache and
    # OpenCV augmentation the main process keeps up better (bench/speed.py: 0.94x against 0.80x).
    return 0


def loader_options(rt: Runtime, device: torch.device) -> dict:
    """DataLoader keywords from the machine, each overridable in runtime."""
    workers = num_workers(rt, device)
    opts = {"num_workers": workers, "pin_memory": device.type == "cuda" if rt.pin_memory is None else rt.pin_memory}
    if workers:
        opts.update(persistent_workers=True, prefetch_factor=rt.prefetch_factor)
    return opts


def prepare(model: torch.nn.Module, device: torch.device, rt: Runtime) -> torch.nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def compiled(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """torch.compile'd under runtime.compile. Checkpoints save timm.utils.unwrap_model(model)."""
    return torch.compile(model) if rt.compile else model


def to_input(x: torch.Tensor, device: torch.device, rt: Runtime, dc=None) -> torch.Tensor:
    """A batch on the device in the model's memory format. A uint8 batch (N, H, W, 3), as training
    loaders yield, crosses to the device as bytes and is normalised there with the data config's
    (dc) mean and std, the whole batch at once."""
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    if x.dtype != torch.uint8:
        return x.to(device, non_blocking=True, memory_format=fmt)
    scale, shift = _normaliser(tuple(dc.mean), tuple(dc.std), device)
    x = torch.addcmul(shift, x.to(device, non_blocking=True).float(), scale)  # (x / 255 - mean) / std, one pass
    return x.permute(0, 3, 1, 2).contiguous(memory_format=fmt)  # NHWC in memory is channels-last already


@functools.lru_cache(maxsize=16)
def _normaliser(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / (255 std) and -mean / std on the device, made once for a data config, not every step."""
    s = torch.tensor(std, device=device)
    return 1.0 / (255.0 * s), -torch.tensor(mean, device=device) / s


def amp_dtype(rt: Runtime) -> torch.dtype:
    if rt.amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, rt.amp_dtype)


def autocast(device: torch.device, rt: Runtime):
    """Mixed precision on a GPU under runtime.amp; nothing to enter otherwise (a disabled
    torch.autocast still costs its switches at every step)."""
    if not (rt.amp and device.type == "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(rt))


def grad_scaler(device: torch.device, rt: Runtime) -> torch.amp.GradScaler:
    """Loss scaling, which float16 needs and bfloat16 does not; a no-op when disabled."""
    on = rt.amp and device.type == "cuda" and amp_dtype(rt) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=on)


@torch.inference_mode()
def activate(logits: torch.Tensor, act=False) -> torch.Tensor:
    """Predictions from logits, as `act` says: False: softmax over classes; True: a sigmoid per
    label (multi-label); a targets.TargetScale: a number in the target's units."""
    if hasattr(act, "output"):
        return act.output(logits)
    return logits.float().sigmoid() if act else logits.float().softmax(-1)


@torch.inference_mode()  # no autograd graph, which a model with trainable layers would otherwise build
def predict(model: torch.nn.Module, loader, device: torch.device, rt: Runtime, act=False) -> np.ndarray:
    """Predictions, (N, C), in the loader's order (`act`: activate's)."""
    model.eval()
    out = []
    for x, _ in progress.bar(loader, len(loader), "validate"):
        with autocast(device, rt):
            logits = model(to_input(x, device, rt))
        out.append(activate(logits, act).cpu())
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- batch_size: auto


def fits(model: torch.nn.Module, size: int, batch: int, device: torch.device, rt: Runtime, budget: float) -> bool:
    """Whether a training step at this batch and image size fits: a forward and backward pass that
    runs out of memory, or peaks above `budget` of the GPU's memory (room left for the optimizer's
    state and the loader's batches), does not. The probe's noise images leave no trace in the
    model's BatchNorm statistics."""
    model.train()
    buffers = [b.clone() for b in model.buffers()]
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        x = to_input(torch.randn(batch, 3, size, size), device, rt)
        with autocast(device, rt):
            out = model(x)
        out.float().mean().backward()
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            return torch.cuda.max_memory_allocated(device) <= budget * total
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        del buffers
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(fit, cap: int, start: int = 16) -> int:
    """The largest batch b <= cap with fit(b) (fit: batch -> bool, true up to some batch): doubling
    from `start`, then bisecting until within an eighth. 0 when not even one image fits."""
    lo, hi = 0, cap + 1  # fit(lo) holds (or lo is 0); fit(hi) fails (or hi is past the cap)
    b = min(start, cap)
    while hi - lo > max(1, lo // 8):
        if fit(b):
            lo = b
        else:
            hi = b
        b = min(2 * lo, cap) if hi == cap + 1 else (lo + hi) // 2
        if b in (lo, hi):
            break
    return lo
