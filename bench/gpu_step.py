"""Seconds per training step (forward, backward, SGD update) of the demo's backbone on a GPU, by
precision and memory format: which of them makes the all-layer phases slow.

Usage: python bench/gpu_step.py [--backbone tf_efficientnet_lite2] [--size 192] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch


def step_seconds(model, x, y, dtype, steps: int = 5) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="tf_efficientnet_lite2")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    y = torch.randint(0, 2, (args.batch,), device="cuda")
    for dtype in (torch.bfloat16, torch.float32):
        for fmt in (torch.channels_last, torch.contiguous_format):
            model = timm.create_model(args.backbone, num_classes=2).cuda().to(memory_format=fmt).train()
            x = torch.randn(args.batch, 3, args.size, args.size, device="cuda").to(memory_format=fmt)
            s = step_seconds(model, x, y, dtype)
            print(f"{torch.cuda.get_device_name()}: {args.backbone} {args.size}px batch {args.batch} "
                  f"{str(dtype)[6:]} {str(fmt)[6:]}: {s * 1000:.1f} ms/step", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
