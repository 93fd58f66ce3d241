"""pipeline/distributed.py and DDP training: two processes (gloo, CPU) train what one does."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch
from helpers import CPU, ROOT, make_config

from pipeline import distributed, engine
from pipeline.competition import read_competition
from pipeline.config import Runtime
from pipeline.config_files import load_config
from pipeline.stages import folds as folds_stage
from pipeline.stages import train
from pipeline.training import loop

# Deterministic given the images: BatchNorm as pretrained (batch statistics would differ between
# one batch of 4 and two of 2), augmentation seeded per image, no dropout.
PHASES = [{"epochs": 2, "lr": 3e-3, "freeze_bn": True}]
KEYS = dict(phases=PHASES, batch_size=4, accum_steps=2)


def _run_dir_files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


@pytest.mark.parametrize("model", [{}, {"head": "arcface", "global_pool": "gem"}], ids=["linear", "arcface-gem"])
def test_two_processes_train_the_weights_one_process_does(tmp_path, comp, model):
    """A margin head too: its margin is the loss's, so DDP's gradients are those of the one batch."""
    extra = {"model": {"backbone": "test_efficientnet", "pretrained": "none", "img_size": 32, **model}}
    one = load_config(make_config(tmp_path, comp, name="one", train=KEYS, **extra))
    folds_stage.main(one)
    train.train_fold(one, read_competition(one), 0)

    two = make_config(tmp_path, comp, name="two", train=KEYS, **extra)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PIPELINE_JOBS")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    res = subprocess.run(
        [*cmd, "-m", "pipeline", "train", str(two), "--fold", "0"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("fold 0 epoch 1 ") == 1  # process 0 alone reports

    run_two = load_config(two).run_dir
    a = torch.load(one.run_dir / "fold0" / "last.pt", weights_only=True)
    b = torch.load(run_two / "fold0" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.allclose(b["model"][key].float(), value.float(), rtol=1e-3, atol=1e-4), key
    # validation gathered from both processes: the same probabilities for every image
    assert torch.allclose(a["kept"]["probs"], b["kept"]["probs"], atol=1e-5)
    assert _run_dir_files(run_two / "fold0") == _run_dir_files(one.run_dir / "fold0")


def test_only_process_zero_writes(tmp_path, comp, monkeypatch):
    cfg = load_config(make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}]}))
    folds_stage.main(cfg)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    train.train_fold(cfg, read_competition(cfg), 0)
    assert not (cfg.run_dir / "fold0").exists()


class CountsNoSync(torch.nn.Module):
    """Stands in for DistributedDataParallel: counts the steps run under no_sync."""

    def __init__(self, module):
        super().__init__()
        self.module, self.unsynced = module, 0

    def forward(self, x):
        return self.module(x)

    @contextlib.contextmanager
    def no_sync(self):
        self.unsynced += 1
        yield


@pytest.mark.parametrize("accum, batches, unsynced", [(1, 4, 0), (2, 4, 2), (3, 4, 2)])
def test_accumulation_steps_skip_the_gradient_sync(accum, batches, unsynced):
    net = CountsNoSync(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = [(torch.randn(2, 3, 2, 2), torch.tensor([0, 1])) for _ in range(batches)]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    rt = Runtime(channels_last=False)
    scaler = engine.grad_scaler(CPU, rt)
    loop.train_one_epoch(net, loader, opt, sched, scaler, torch.nn.CrossEntropyLoss(), CPU, rt, accum, False)
    assert net.unsynced == unsynced  # every batch but the last before each update (and the epoch's last)


def test_shards_make_up_the_one_process_batches(monkeypatch):
    base = torch.utils.data.RandomSampler(range(10), generator=torch.Generator())
    one = distributed.ShardSampler(base)
    one.set_epoch(7)
    order = [i for i, _ in one]
    shards = []
    for r in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(r))
        s = distributed.ShardSampler(base)
        s.set_epoch(7)
        shards.append([i for i, seed in s])
    # a batch of 4 in one process is the batches of 2 at the same position in both
    for j in range(2):
        assert sorted(shards[0][2 * j : 2 * j + 2] + shards[1][2 * j : 2 * j + 2]) == sorted(order[4 * j : 4 * j + 4])


def _pool_worker(rank: int, init: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    bn = torch.nn.BatchNorm1d(1, momentum=None).train()
    bn(torch.tensor([[0.0], [2.0]]) if rank == 0 else torch.tensor([[10.0], [12.0]]))  # mean 1 or 11, var 2
    distributed.pool_bn_stats(bn)
    torch.save({"mean": bn.running_mean, "var": bn.running_var}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_pooled_batchnorm_statistics_count_the_spread_between_processes(tmp_path):
    out = str(tmp_path / "stats")
    torch.multiprocessing.spawn(_pool_worker, args=(f"file://{tmp_path / 'init'}", out), nprocs=2)
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        # mean of the means; mean of (var + mean^2) less mean^2: (3 + 123) / 2 - 36, not the shares' 2
        assert got["mean"].item() == pytest.approx(6.0) and got["var"].item() == pytest.approx(27.0)
