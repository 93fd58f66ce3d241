"""Several processes on one fold (DDP under torchrun): which process this is, sharding, gathering.

`make train GPUS=N` starts N processes through torchrun, which sets RANK, WORLD_SIZE and
LOCAL_RANK. With none of them set, this is the one process of a plain run and every helper here
is a no-op. train.batch_size stays the global batch: each process takes batch_size / N of it, so
the recipe (and the LRs tuned for it) mean the same on one GPU or eight.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Only this process writes files (checkpoints, history, stamps) and prints progress."""
    return rank() == 0


def say(text: str) -> None:
    """Progress, printed once (by process 0 under DDP)."""
    if is_main():
        print(text, flush=True)


def start(device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs) when torchrun started several processes."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def smallest(value: int, device: torch.device) -> int:
    """The smallest of every process's value (a batch each found fits in its own GPU's memory)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Process 0's buffers (BatchNorm statistics) in every process."""
    if dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


def pool_bn_stats(model: torch.nn.Module) -> None:
    """BatchNorm statistics each process measured on its share of the images, replaced by those
    of all the images: the mean of the means, and the mean of (variance + mean^2) less the pooled
    mean^2 (so the spread between the shares counts, not only the spread within each)."""
    if not dist.is_initialized():
        return
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            square = m.running_var + m.running_mean**2
            for t in (m.running_mean, square):
                dist.all_reduce(t)
                t /= world_size()
            m.running_var.copy_(square - m.running_mean**2)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model when several processes train it."""
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a frozen phase leaves the backbone without gradients
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


class ShardSampler(torch.utils.data.Sampler):
    """This process's share of another sampler's order: every world_size-th index from its rank.
    Every process draws the same order (same seed), so the shards of a batch position make up the
    batch one process would have drawn. Yields (index, epoch seed): the dataset seeds each image's
    augmentation from the pair, so an image is augmented alike whichever process or loader worker
    takes it, and a resumed run draws what an uninterrupted one would have."""

    def __init__(self, base: torch.utils.data.Sampler):
        self.base, self.world, self.rank, self.seed = base, world_size(), rank(), 0

    def set_epoch(self, seed: int) -> None:
        """Reseed the order and the augmentation (as DistributedSampler.set_epoch does the order)."""
        self.seed = seed
        gen = getattr(self.base, "generator", None)
        if gen is not None:
            gen.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = list(self.base)
        order = order[: len(order) - len(order) % self.world]  # equal shards: every process steps together
        return iter((i, self.seed) for i in order[self.rank :: self.world])

    def __len__(self) -> int:
        return len(self.base) // self.world


def gather_rows(rows: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's rows of a strided shard (process r holds items r, r + world, ...), back in
    item order: the first n rows of the interleave. Pads each shard to one length for all_gather."""
    if not dist.is_initialized():
        return rows
    per = -(-n // world_size())
    on = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((per, *rows.shape[1:]), dtype=rows.dtype, device=on)
    padded[: len(rows)] = rows.to(on)
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.stack(parts, 1).flatten(0, 1)[:n].cpu()
