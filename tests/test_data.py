"""pipeline/data.py: decoding, the data config, transforms, sampling and unlabelled folders."""

import numpy as np
import pytest
import torch
from helpers import CPU, neg_competition, neg_config, truncate
from PIL import Image

from pipeline import data, engine
from pipeline.config import Aug, Runtime
from pipeline.data import DataConfig
from pipeline.errors import PipelineError


@pytest.fixture(params=["opencv", "pil"])
def decoder(request, monkeypatch):
    """Each decoding test twice: as files are read (OpenCV for a whole JPEG or PNG), and through
    PIL alone (what a file OpenCV cannot decode, or whose end marker is missing, goes to)."""
    if request.param == "pil":
        monkeypatch.setattr(data.cv2, "imdecode", lambda *a, **k: None)
    return request.param


def _noise(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def _read(path) -> np.ndarray:
    img = data.read_image(path)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    return img


def test_greyscale_rgba_and_palette_pngs_load_as_rgb(tmp_path, decoder):
    grey, rgba = _noise(20, 30, 0), _noise(20, 30, 4)
    Image.fromarray(grey).save(tmp_path / "l.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    pal = Image.fromarray(_noise(20, 30)).quantize(16)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(_read(tmp_path / "l.png"), np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(_read(tmp_path / "rgba.png"), rgba[..., :3])  # alpha dropped, not blended
    assert np.array_equal(_read(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path, decoder):
    """Not clipped at 255 (PIL's convert of I;16 would make the image almost white)."""
    grey = np.random.default_rng(0).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode == "I;16"
    rgb = np.random.default_rng(1).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    assert data.cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    for path, want in (("i16.png", np.repeat(grey[..., None], 3, axis=2)), ("rgb16.png", rgb)):
        got = _read(tmp_path / path).astype(int)
        assert np.abs(got - want / 256).max() <= 1, path  # rounded or truncated: within one level


def test_exif_rotated_jpeg_is_turned_upright(tmp_path, decoder):
    """Orientation 6: the stored pixels are turned 90 degrees clockwise to display; a red band
    along the stored top is then down the right side."""
    stored = np.full((40, 60, 3), 30, np.uint8)
    stored[:10, :, 0] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    img = _read(tmp_path / "rot.jpg")
    assert img.shape == (60, 40, 3)
    assert img[:, -8:, 0].mean() > 200 and img[:, :28, 0].mean() < 60


def test_the_format_is_read_from_the_bytes_not_the_suffix(tmp_path, decoder):
    rgb = _noise(20, 30)
    Image.fromarray(rgb).save(tmp_path / "really_a_png.jpg", format="PNG")
    assert np.array_equal(_read(tmp_path / "really_a_png.jpg"), rgb)
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "really_a_gif.jpg", format="GIF")
    assert np.array_equal(_read(tmp_path / "really_a_gif.jpg"), np.full((20, 30, 3), 200, np.uint8))


def test_bytes_after_a_jpegs_end_are_allowed(tmp_path, decoder):
    """Padding, or more (a camera's trailer) that sends the file to PIL, which stops at the end."""
    path = tmp_path / "x.jpg"
    Image.fromarray(_noise(32, 32)).save(path, quality=90)
    want = _read(path)
    whole = path.read_bytes()
    for extra in (b"\0" * 100, b"\xff\xda trailer" * 1000):
        path.write_bytes(whole + extra)
        assert np.array_equal(_read(path), want)


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("gone.jpg", None, "image not found"),
        ("empty.jpg", lambda p: p.write_bytes(b""), r"image is empty \(0 bytes\)"),
        ("half.jpg", lambda p: truncate(p, 0.5), "image is truncated or corrupt"),
        ("no_end.jpg", lambda p: p.write_bytes(p.read_bytes()[:-2]), "image is truncated or corrupt"),
        ("half.png", lambda p: truncate(p, 0.5), "image is truncated or corrupt"),
        ("text.jpg", lambda p: p.write_text("id,label\nx,ants\n"), r"cannot read image \(not an image file"),
    ],
)
def test_missing_empty_truncated_and_non_images_are_refused(tmp_path, decoder, name, make, message):
    """A JPEG cut in half that OpenCV's imread decodes comes back with a grey bottom half (and a
    warning naming no file); here it is an error naming the file."""
    path = tmp_path / name
    if make is not None:
        Image.fromarray(_noise(64, 64)).save(path, format="PNG" if name.endswith(".png") else "JPEG")
        make(path)
    with pytest.raises(PipelineError, match=rf"^{path}: {message}"):
        data.read_image(path)


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
