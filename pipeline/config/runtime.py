"""The runtime section, apart from the rest because it never makes a stage's outputs stale: the
stamps leave it out whole."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import _Section


class Runtime(_Section):
    """Where and how the work runs; changing it never makes a stage's outputs stale."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA when torch sees a GPU")
    amp: bool = Field(True, description="autocast, on CUDA only")
    amp_dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 where the GPU has it, else float16 with loss scaling"
    )
    channels_last: bool = Field(True, description="channels-last memory format (faster for convnets, CPU too)")
    fold_frozen_bn: bool = Field(
        True,
        description="head-only phases step through a copy of the model whose frozen BatchNorms are folded into "
        "their convolutions: the same function up to float rounding, about a sixth less time a step on a CPU",
    )
    compile: bool = Field(False, description="torch.compile the model (minutes of compiling, then faster steps)")
    deterministic: bool = Field(
        False, description="torch's deterministic algorithms and no cudnn.benchmark: slower, repeatable on a GPU"
    )
    cache: bool = Field(True, description="decode each image once into runtime.cache_dir (false: decode every epoch)")
    cache_dir: str = Field("cache", description="where decoded images are kept, shared by experiments")
    cache_format: Literal["auto", "raw", "jpeg"] = Field(
        "auto",
        description="raw: pixels (fastest to read); jpeg: each image re-encoded once at the cached size, "
        "quality 95 (about a fifth of raw on disk, decoded with OpenCV); auto: raw while it takes at most "
        "half the free disk and half the memory this process may use, else jpeg",
    )
    check_images: bool = Field(
        True,
        description="before train and infer, decode every train and test image once (those unchanged since "
        "they last passed are skipped: cache_dir/checked.json); a bad one stops the stage before its first epoch",
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes; null: none on a CPU, cores - 1 (up to 8) per GPU"
    )
    pin_memory: bool | None = Field(None, description="page-locked batches; null: on with a GPU")
    prefetch_factor: int = Field(4, ge=1, description="batches each worker prepares ahead")
    budget: float | None = Field(
        None,
        gt=0,
        description="minutes for the folds' epochs: the first fold's first steps measure the speed, then every "
        "phase's epochs are scaled by one factor (at least 1 each) to fit; runs/<name>/budget.json keeps the "
        "decision for every fold. null: the epochs as written",
    )
