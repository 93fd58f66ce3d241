"""pipeline/data.py: decoding, the data config, transforms, sampling and unlabelled folders."""

import numpy as np
import pytest
import torch
from helpers import CPU, neg_competition, neg_config
from PIL import Image

from pipeline import data, engine
from pipeline.config import Aug, Runtime
from pipeline.data import DataConfig
from pipeline.errors import PipelineError


def test_reads_gif_named_jpg(tmp_path):
    path = tmp_path / "really_a_gif.jpg"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path, format="GIF")
    img = data.read_image(path)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8


def test_falls_back_to_pil_when_opencv_cannot_decode(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(path)
    monkeypatch.setattr(data.cv2, "imread", lambda *a, **k: None)
    assert data.read_image(path).shape == (8, 9, 3)


def test_unreadable_and_missing_images_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(PipelineError, match="broken.jpg: cannot read image"):
        data.read_image(bad)
    with pytest.raises(PipelineError, match="gone.jpg: image not found"):
        data.read_image(tmp_path / "gone.jpg")


def test_data_config_round_trips_timms_dict():
    timm_dc = {
        "input_size": (3, 32, 32),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "crop_mode": "center",
    }
    dc = DataConfig.from_timm(timm_dc)
    assert (dc.size, dc.crop_pct, dc.interpolation) == (32, 0.9, "bicubic")
    assert DataConfig.from_timm(dc.to_timm()) == dc and dc.at(48).size == 48 and dc.at(48).mean == dc.mean


def test_eval_gives_normalised_tensors_and_train_gives_bytes_the_batch_normalises():
    dc = DataConfig(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic", crop_pct=0.9)
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    x = data.eval_transform(dc)(image=img)["image"]
    assert tuple(x.shape) == (3, 32, 32) and float(x.min()) >= -1.01 and float(x.max()) <= 1.01
    crop = data.train_transform(dc, Aug())(image=img)["image"]
    assert crop.dtype == torch.uint8 and tuple(crop.shape) == (32, 32, 3)
    batch = engine.to_input(torch.stack([crop, crop]), CPU, Runtime(), dc)
    assert batch.shape == (2, 3, 32, 32) and batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch[0, :, 5, 7], (crop[5, 7].float() / 255 - 0.5) / 0.5)


@pytest.mark.parametrize("shape", [(50, 70), (70, 50), (40, 400), (400, 40)])
def test_train_crops_follow_the_random_resized_crop_recipe(shape):
    """Crops inside the image, of an area in [scale_min, 1] and an aspect in [3/4, 4/3] (or the
    centre when ten tries fail); the same seed, the same crop."""
    aug = Aug(scale_min=0.35, color_jitter=0.0, hflip=0.0)
    t = data.train_transform(DataConfig(16, (0.5,) * 3, (0.5,) * 3), aug)
    h, w = shape
    for seed in range(50):
        t.set_random_seed(seed)
        y, x, ch, cw = t.crop_box(h, w)
        assert y >= 0 and y + ch <= h and x >= 0 and x + cw <= w
        centre = (y, x) == ((h - ch) // 2, (w - cw) // 2) and (ch == h or cw == w)
        assert centre or (0.34 * h * w <= ch * cw and 0.72 <= cw / ch <= 1.36)  # give or take rounding
        t.set_random_seed(seed)
        assert t.crop_box(h, w) == (y, x, ch, cw)


def test_colour_jitter_keeps_a_grey_image_grey_and_moves_a_colour_one():
    t = data.train_transform(DataConfig(16, (0.5,) * 3, (0.5,) * 3), Aug(color_jitter=0.4))
    grey = np.full((16, 16, 3), 120, np.uint8)
    out = t.jitter(grey)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    colour = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert any(not np.array_equal(t.jitter(colour), colour) for _ in range(3))


def test_oversample_repeats_each_class_up_to_the_largest():
    y = np.array([0] * 10 + [1] * 3)
    idx = data.oversample(y, seed=0)
    assert np.bincount(y[idx]).tolist() == [10, 10]
    assert np.bincount(idx[y[idx] == 1], minlength=13)[10:].tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert np.array_equal(idx, data.oversample(y, seed=0))


def test_folder_images_refuses_labelled_ones(tmp_path):
    comp = neg_competition(tmp_path / "comp")
    d = neg_config(tmp_path, comp).data
    assert data.folder_images(d, "extra_neg", "mine.pool") == [f"extra_neg/x{i}.png" for i in range(5)]
    with pytest.raises(PipelineError, match=r"mine.pool: train/tr000\.jpg is a labelled image \(train\.csv line 2\)"):
        data.folder_images(d, ".", "mine.pool")
    with pytest.raises(PipelineError, match="pseudo.source: .*nowhere is not a folder"):
        data.folder_images(d, "nowhere", "pseudo.source")
