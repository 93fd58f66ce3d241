"""pipeline/engine.py: loader defaults from the machine, precision, and batch_size: auto."""

import dataclasses
import json
import subprocess
import sys

import pytest
import timm
import torch
from helpers import CPU, make_config

from pipeline import cores, engine, optim
from pipeline.competition import read_competition
from pipeline.config import Runtime
from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.stages import folds as folds_stage
from pipeline.training.fold import build
from pipeline.training.loaders import phase_batch


def test_loader_options_follow_the_machine_and_the_config(monkeypatch):
    monkeypatch.setattr(engine, "cores", lambda: 2)
    assert engine.loader_options(Runtime(), CPU) == {"num_workers": 0, "pin_memory": False}  # see num_workers
    two = engine.loader_options(Runtime(num_workers=2, pin_memory=True, prefetch_factor=3), CPU)
    assert two == {"num_workers": 2, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 3}


def test_cpu_threads_are_shared_between_make_jobs(monkeypatch, tmp_path):
    monkeypatch.setattr(cores, "cores", lambda: 8)
    threads = torch.get_num_threads()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another make job
    try:
        monkeypatch.setenv("PIPELINE_JOBS", "4")  # make -j4, two jobs running
        folder = tmp_path / cores.FOLDER
        folder.mkdir()
        (folder / f"{other.pid}.json").write_text(json.dumps({"pid": other.pid, "start": cores.started(other.pid)}))
        engine.setup(Runtime(cache_dir=str(tmp_path)), CPU)
        assert torch.get_num_threads() == 4
        assert torch.backends.cudnn.benchmark  # autotuned unless runtime.deterministic
        engine.setup(Runtime(deterministic=True, cache_dir=str(tmp_path)), CPU)
        assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    finally:
        other.kill()
        other.wait()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


def test_a_cluster_launchers_grant_sets_the_cores(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert engine.cores() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert 1 <= engine.cores() <= (engine.os.cpu_count() or 1)


def test_largest_batch_doubles_then_bisects():
    tried = []

    def fit(b):
        tried.append(b)
        return b <= 40

    assert engine.largest_batch(fit, cap=1000) in range(36, 41)  # within an eighth
    assert tried[:3] == [16, 32, 64]
    assert engine.largest_batch(lambda b: True, cap=100) == 100
    assert engine.largest_batch(lambda b: b <= 5, cap=100) == 5
    assert engine.largest_batch(lambda b: False, cap=100) == 0


class OutOfMemoryAbove(torch.nn.Module):
    """A model whose forward runs out of memory above `limit` images: a simulated GPU."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.conv = limit, torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("simulated: out of memory")
        return self.conv(x).mean((2, 3))


def test_batch_size_auto_finds_what_fits_under_a_memory_limit(tmp_path, comp, monkeypatch):
    model = OutOfMemoryAbove(limit=24)
    rt = Runtime(channels_last=False)
    assert engine.largest_batch(lambda b: engine.fits(model, 16, b, CPU, rt, 0.85), cap=512) in range(21, 25)
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradients behind

    keys = {"batch_size": "auto", "lr_ref_batch": 8, "phases": [{"epochs": 1, "lr": 1e-3}]}
    cfg = load_config(make_config(tmp_path, comp, train=keys))
    folds_stage.main(cfg)
    run = build(cfg, read_competition(cfg), 0)
    assert phase_batch(run, 0) == 8  # no GPU memory to fill on a CPU: the reference batch
    gpu_like = dataclasses.replace(run, spec=dataclasses.replace(run.spec, device=torch.device("cuda")))
    monkeypatch.setattr(engine, "fits", lambda model, size, b, *a: b <= 12)
    batch = phase_batch(gpu_like, 0)
    assert batch == 2  # capped: 16 training images make at least 8 steps
    monkeypatch.setattr(engine, "fits", lambda model, size, b, *a: b <= 1)
    assert phase_batch(gpu_like, 0) == 1
    phase = cfg.train.phases[0]
    assert optim.peak_lrs(run.state.optimizer, phase, cfg.train, 16)[0] == pytest.approx(2 * phase.lr)  # linear scaling
    monkeypatch.setattr(engine, "fits", lambda *a: False)
    with pytest.raises(PipelineError, match="not one 32 px image fits"):
        phase_batch(gpu_like, 0)


def test_batch_size_auto_needs_the_reference_batch(tmp_path, comp):
    with pytest.raises(PipelineError, match="batch_size: auto needs lr_ref_batch"):
        load_config(make_config(tmp_path, comp, train={"batch_size": "auto"}))


def test_probing_a_batch_leaves_the_batchnorm_statistics_alone():
    model = timm.create_model("test_efficientnet", num_classes=2)
    before = [b.clone() for b in model.buffers()]
    assert engine.fits(model, 32, 4, CPU, Runtime(channels_last=False), 0.85)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
