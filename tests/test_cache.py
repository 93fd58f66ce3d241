"""pipeline/cache.py: the decode cache gives the pixels decoding gives, and is never read stale."""

import math
import os
import pickle
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import DC, make_competition, make_config
from PIL import Image

from pipeline import cache
from pipeline.config_files import load_config
from pipeline.data import ImageDataset, eval_transform, make_loader, read_image, resize_short, train_transform
from pipeline.errors import PipelineError

# kept at the short side eval resizes to at DC's size (crop_pct 1: the cache keeps what it resized)
STORED = replace(DC, size=int(round(DC.size / DC.crop_pct)), crop_pct=1.0)


def _paths(comp):
    return sorted((comp / "train").glob("*.jpg")) + sorted((comp / "test").glob("*.jpg"))


def test_cached_pixels_equal_decoded_ones(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=6, n_test=2)
    paths = _paths(comp)
    images = cache.open_cache(paths, STORED, tmp_path / "cache")
    assert len(images) == len(paths)
    for p in paths:
        want = resize_short(STORED)(image=read_image(p))["image"]
        assert np.array_equal(images(p), want)
    # and so the eval recipe through the cache gives exactly what it gives from the files
    plain, cached = (ImageDataset(paths, None, eval_transform(DC), src) for src in (None, images))
    for i in range(len(paths)):
        assert torch.equal(plain[i][0], cached[i][0])


def test_rebuilt_when_an_image_or_the_size_changes(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=4, n_test=1)
    paths = _paths(comp)
    first = cache.open_cache(paths, STORED, tmp_path / "cache")
    assert cache.open_cache(paths, STORED, tmp_path / "cache").folder == first.folder  # reused as is

    changed = paths[1]
    Image.fromarray(np.full((40, 48, 3), 7, np.uint8)).save(changed, quality=95)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a newer mtime even on a coarse clock
    second = cache.open_cache(paths, STORED, tmp_path / "cache")
    assert second.folder != first.folder
    assert np.array_equal(second(changed), resize_short(STORED)(image=read_image(changed))["image"])

    bigger = cache.open_cache(paths, STORED.at(STORED.size + 8), tmp_path / "cache")
    assert bigger.folder not in (first.folder, second.folder) and min(bigger(paths[0]).shape[:2]) == 40  # as it is
    assert not list((tmp_path / "cache").glob("*.tmp*"))  # no half-built folder is left behind


def test_an_unreadable_image_is_named_and_leaves_nothing_behind(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=4, n_test=1)
    paths = _paths(comp)
    paths[1].write_bytes(b"not an image")
    with pytest.raises(PipelineError, match=rf"{paths[1]}: cannot read image"):
        cache.open_cache(paths, STORED, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_image_outside_the_cache_is_decoded(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=4, n_test=1)
    paths = _paths(comp)
    images = cache.open_cache(paths[:2], STORED, tmp_path / "cache")
    assert np.array_equal(images(paths[3]), resize_short(STORED)(image=read_image(paths[3]))["image"])


def test_loader_workers_open_their_own_map(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=6, n_test=2)
    paths = _paths(comp)
    images = cache.open_cache(paths, STORED, tmp_path / "cache")
    images(paths[0])  # maps the file in this process
    assert pickle.loads(pickle.dumps(images))._pixels is None  # a worker gets the index, not the pixels
    ds = ImageDataset(paths, None, eval_transform(DC), images)
    worker = torch.cat([x for x, _ in make_loader(ds, 3, False, {"num_workers": 2})])
    assert torch.equal(worker, torch.stack([ds[i][0] for i in range(len(ds))]))


def test_a_run_caches_at_its_largest_size_and_can_turn_it_off(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=4, n_test=2)
    phases = [{"epochs": 1, "lr": 1e-3, "img_size": 24}, {"epochs": 1, "lr": 1e-3}]
    cfg = load_config(make_config(tmp_path, comp, train={"phases": phases}, infer={"tta": {"sizes": [48]}}))
    # the smallest crop of the 32 px phase (35% of the area at 3:4) scaled down, not up; more than TTA's 48 needs
    assert cache.stored_short(cfg, DC) == math.ceil(32 / math.sqrt(0.35 * 0.75)) > round(48 / DC.crop_pct)
    images = cache.run_cache(cfg, DC)
    assert len(images) == 6 and images.folder.parent == tmp_path / "cache"
    off = load_config(make_config(tmp_path, comp, runtime={"cache": False}))
    assert cache.run_cache(off, DC) is None


def test_the_smallest_crop_a_phase_draws_from_the_cache_is_scaled_down_never_up(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=4, n_test=2)
    cfg = load_config(make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}]}))
    short = cache.stored_short(cfg, DC)
    t = train_transform(DC, cfg.train.aug)
    smallest = 10**9
    for seed in range(300):  # crops of a square cached image, the worst case for the short side
        t.set_random_seed(seed)
        _, _, h, w = t.crop_box(short, short)
        smallest = min(smallest, h, w)
    assert DC.size <= smallest < DC.size * 1.2  # close to the bound: the cache is not bigger than it needs
    wide = load_config(make_config(tmp_path, comp, name="wide", train={"aug": {"scale_min": 0.08}}))
    assert cache.stored_short(wide, DC) == round(DC.size * cache.MAX_GROWTH)  # timm's 0.08 would ask 4.1x


def test_the_cache_on_and_off_give_the_same_training_crops(tmp_path):
    comp = make_competition(tmp_path / "c", n_train=6, n_test=2)  # 40 px images, under the 63 px kept
    cfg = load_config(make_config(tmp_path, comp))
    paths = sorted((comp / "train").glob("*.jpg"))
    on = cache.run_cache(cfg, DC, paths)
    t = train_transform(DC, cfg.train.aug)
    cached, decoded = (ImageDataset(paths, None, t, src) for src in (on, None))
    for i in range(len(paths)):
        assert torch.equal(cached[(i, 7)][0], decoded[(i, 7)][0])  # (index, epoch seed), as training asks


def _photos(folder, n=8):
    """Smooth 96x128 pictures (gradients and a disc), as photos are, unlike the tests' noise."""
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:96, 0:128]
    paths = []
    for k in range(n):
        img = np.stack([xx * 2, yy * 2 + 10 * k, 255 - xx - yy], -1).clip(0, 255)
        img[(yy - 48) ** 2 + (xx - 20 - 10 * k) ** 2 < 300] = (250, 200, 40)
        paths.append(folder / f"{k}.jpg")
        Image.fromarray(img.astype(np.uint8)).save(paths[-1], quality=95)
    return paths


def test_a_jpeg_cache_is_a_fraction_of_raw_and_close_to_its_pixels(tmp_path, capsys):
    paths = _photos(tmp_path / "photos")
    big = STORED.at(96)
    raw = cache.open_cache(paths, big, tmp_path / "cache")
    jpeg = cache.open_cache(paths, big, tmp_path / "cache", fmt="jpeg")
    assert jpeg.folder != raw.folder and jpeg.jpeg and not raw.jpeg
    printed = capsys.readouterr().out
    assert f"decode cache {jpeg.folder}: 8 images at 96 px, jpeg (runtime.cache_format)" in printed
    size = {c: (c.folder / ("pixels.jpg" if c.jpeg else "pixels.u8")).stat().st_size for c in (raw, jpeg)}
    assert size[jpeg] < size[raw] / 4
    for p in paths:
        a, b = raw(p).astype(int), jpeg(p).astype(int)
        assert a.shape == b.shape == (96, 128, 3) and np.abs(a - b).mean() < 2  # quality 95
    # auto takes whichever is built; with neither, raw while it fits, jpeg when it would not
    assert cache.open_cache(paths, big, tmp_path / "cache", fmt="auto").folder == raw.folder
    assert cache.choose_format("auto", paths, 96, tmp_path)[0] == "raw"
    assert cache.raw_bytes(paths, 96) == 8 * 96 * 128 * 3 and cache.memory_limit() > 0


def test_auto_chooses_jpeg_when_raw_would_not_fit_the_memory(tmp_path, monkeypatch, capsys):
    paths = _photos(tmp_path / "photos", 3)
    monkeypatch.setattr(cache, "memory_limit", lambda: 10_000)  # as under systemd-run -p MemoryMax=
    fmt, why = cache.choose_format("auto", paths, 64, tmp_path)
    assert fmt == "jpeg" and "raw about" in why and "more than 50%" in why
    built = cache.open_cache(paths, STORED, tmp_path / "cache", fmt="auto")
    assert built.jpeg and "-jpeg-" in built.folder.name and "jpeg (auto: raw about" in capsys.readouterr().out
