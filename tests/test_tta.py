"""pipeline/tta.py: views are exact tensor ops with inverses, every combination is made, merges
compute what they say, and the views do not depend on batching."""

import numpy as np
import pytest
import torch
from helpers import DC
from PIL import Image

from pipeline import tta
from pipeline.config import Model, Runtime, Tta
from pipeline.data import ImageDataset, eval_transform, make_loader
from pipeline.engine import predict
from pipeline.errors import PipelineError
from pipeline.models import FoldModel, create_model, data_config

CPU = torch.device("cpu")
RT = Runtime(device="cpu", channels_last=False)


@pytest.mark.parametrize("flip", list(tta.FLIPS))
def test_each_view_has_an_exact_inverse(flip):
    x = torch.randn(2, 3, 5, 7)
    back = tta.FLIPS[tta.INVERSE[flip]](tta.FLIPS[flip](x))
    assert torch.equal(back, x)
    if flip != "none":
        assert not torch.equal(tta.FLIPS[flip](x).reshape(-1)[:35], x.reshape(-1)[:35])


def test_flips_are_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    outs = {tuple(tta.FLIPS[f](x).flatten().tolist()) for f in tta.FLIPS}
    assert len(outs) == 7  # all distinct (the eighth, anti-transpose, is not offered)


def test_merge_modes_on_known_arrays():
    p = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.6, 0.4], [0.1, 0.9]]])  # 2 views, 2 images, 2 classes
    assert np.allclose(tta.merge(p, "mean"), [[0.75, 0.25], [0.3, 0.7]])
    g = np.sqrt([[0.9 * 0.6, 0.1 * 0.4], [0.5 * 0.1, 0.5 * 0.9]])
    assert np.allclose(tta.merge(p, "gmean"), g / g.sum(1, keepdims=True))
    m = np.array([[0.9, 0.4], [0.5, 0.9]])
    assert np.allclose(tta.merge(p, "max"), m / m.sum(1, keepdims=True))
    for mode in ("mean", "gmean", "max"):
        assert np.allclose(tta.merge(p[:1], mode), p[0])  # one view: unchanged
    with pytest.raises(ValueError):
        tta.merge(p, "harmonic")


def test_median_merges_a_numbers_views_without_renormalising():
    views = np.array([[[1.0], [10.0]], [[2.0], [30.0]], [[9.0], [20.0]]])  # 3 views of 2 images
    assert tta.merge(views, "median", multilabel=True).tolist() == [[2.0], [20.0]]
    assert tta.merge(views, "mean", multilabel=True).tolist() == [[4.0], [20.0]]


def test_views_cover_every_combination_with_the_plain_view_first():
    views = tta.make_views(32, Tta(flips=["hflip", "rot90"], sizes=[48], crops="five"))
    assert views[0] == tta.View(32, "center", "none")
    assert len(views) == len(set(views)) == 2 * 5 * 3
    sets = tta.view_sets(views)
    assert sets["none"] == [0] and len(sets["all"]) == 30 and len(sets["five crops"]) == 5
    assert [views[i].flip for i in sets["+rot90"]] == ["none", "rot90"]
    assert [views[i].size for i in sets["+48px"]] == [32, 48]
    assert list(tta.view_sets(tta.make_views(32, Tta(flips=[])))) == ["none"]


def _images(tmp_path, sizes=((40, 52), (61, 45), (33, 33))):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_centre_crop_equals_the_eval_transform_and_corners_are_corners(tmp_path):
    paths = _images(tmp_path)
    plain = ImageDataset(paths, None, eval_transform(DC))
    five = tta.CropsDataset(paths, DC, 32, tta.CROPS["five"])
    for i in range(len(paths)):
        crops = five[i][0]
        assert crops.shape == (5, 3, 32, 32)
        assert torch.equal(crops[0], plain[i][0])
        img = ImageDataset.__getitem__(five, i)[0]  # resized, uncropped
        assert torch.equal(crops[1], img[:, :32, :32]) and torch.equal(crops[4], img[:, -32:, -32:])


class FlipInvariant(torch.nn.Module):
    """g(x) + g(hflip(x)): the same output for an image and its mirror image."""

    def __init__(self):
        super().__init__()
        self.g = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))

    def forward(self, x):
        return self.g(x) + self.g(x.flip(-1))


def test_flip_invariant_model_gives_identical_outputs_under_hflip(tmp_path):
    torch.manual_seed(0)
    model = FlipInvariant()
    model(torch.zeros(1, 3, 32, 32))
    paths = _images(tmp_path)
    views = tta.make_views(32, Tta(flips=["hflip", "vflip"]))
    probs = tta.predict_views(model, paths, DC, views, 64, CPU, RT)
    assert probs.shape == (3, len(paths), 3)
    assert torch.allclose(torch.from_numpy(probs[1]), torch.from_numpy(probs[0]), atol=1e-6)
    assert not np.allclose(probs[2], probs[0], atol=1e-3)  # vflip is not a symmetry of it
    plain = predict(model, make_loader(ImageDataset(paths, None, eval_transform(DC)), 2, False), CPU, RT)
    assert np.allclose(probs[0], plain, atol=1e-6)


def test_views_do_not_depend_on_batching(tmp_path):
    torch.manual_seed(0)
    model = FlipInvariant().eval()
    model(torch.zeros(1, 3, 32, 32))
    paths = _images(tmp_path)
    views = tta.make_views(32, Tta(flips=["rot90", "transpose"], crops="five"))
    a = tta.predict_views(model, paths, DC, views, 1, CPU, RT)
    b = tta.predict_views(model, paths, DC, views, 64, CPU, RT)
    assert a.shape == (15, 3, 3) and np.allclose(a, b, atol=1e-6)


def test_fixed_size_model_refuses_extra_tta_sizes():
    model = create_model(Model(backbone="test_vit", pretrained="none", img_size=32), 2)
    fm = FoldModel(0, model, ["ants", "bees"], data_config(model, 32))
    assert len(tta.fold_views(fm, Tta(flips=["hflip"]))) == 2
    with pytest.raises(PipelineError, match="infer.tta.sizes: test_vit has a fixed input size"):
        tta.fold_views(fm, Tta(sizes=[48]))
