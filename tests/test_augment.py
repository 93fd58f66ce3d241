"""pipeline/augment.py: train.aug.transforms, named in the config and built by albumentations."""

import random
import subprocess
import sys

import albumentations as A
import numpy as np
import pytest
import torch
from helpers import ROOT, make_config
from PIL import Image

from pipeline import augment, data, preflight, stamps
from pipeline.config import Aug
from pipeline.config_files import load_config
from pipeline.data import DataConfig
from pipeline.errors import PipelineError

LISTED = [
    {"name": "Affine", "rotate": [-20, 20], "p": 0.7},
    {"name": "CLAHE", "clip_limit": 3.0, "p": 0.5},
    {"name": "OneOf", "p": 0.5, "transforms": [{"name": "GaussianBlur", "blur_limit": [3, 5]}, {"name": "GaussNoise"}]},
    {"name": "RandomRotate90", "p": 0.5},
    {"name": "CoarseDropout", "num_holes_range": [1, 2], "p": 0.5},
]
DC = DataConfig(24, (0.5,) * 3, (0.5,) * 3)


def _image(seed=0, shape=(60, 80)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_a_list_from_yaml_builds_what_albumentations_own_deserialisation_builds(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp, train={"aug": {"transforms": LISTED}}))
    ours = augment.build(cfg.train.aug.transforms)
    theirs = [
        A.from_dict({"transform": {"__class_fullname__": "Affine", "rotate": [-20, 20], "p": 0.7}}),
        A.CLAHE(clip_limit=3.0, p=0.5),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise()], p=0.5),
        A.RandomRotate90(p=0.5),
        A.CoarseDropout(num_holes_range=(1, 2), p=0.5),
    ]
    assert [A.to_dict(t) for t in ours] == [A.to_dict(t) for t in theirs]
    for seed in range(5):  # and they draw alike
        a, b = A.Compose(ours, p=1.0), A.Compose(theirs, p=1.0)
        a.set_random_seed(seed)
        b.set_random_seed(seed)
        assert np.array_equal(a(image=_image(seed))["image"], b(image=_image(seed))["image"])


@pytest.mark.parametrize(
    "listed, words",
    [
        ([{"name": "ClAHE"}], "[0]: unknown transform 'ClAHE'; closest: CLAHE"),
        ([{"name": "CLAHE", "clip_limt": 2}], "[0] CLAHE: unknown parameter 'clip_limt'; closest: clip_limit"),
        ([{"name": "CLAHE", "clip_limit": -2}], "[0] CLAHE: clip_limit: All values"),
        ([{"name": "OneOf", "transforms": [{"name": "Blurr"}]}], "[0].transforms[0]: unknown transform 'Blurr'"),
        ([{"name": "OneOf", "transforms": []}], "[0] OneOf: 'transforms' must be a non-empty list"),
        ([{"name": "MaskDropout", "p": 0.1}], "[0] MaskDropout: ValueError: MaskDropout requires ['mask']"),
        ([{"name": "OneOf", "transforms": [{"name": "CLAHE"}, {"name": "MaskDropout"}]}], "[0] OneOf: ValueError"),
        ([{"name": "Normalize"}], "[0]: unknown transform 'Normalize'"),  # the batch is normalised on the device
    ],
)
def test_unknown_names_parameters_and_values_are_one_line_naming_the_key_before_training(tmp_path, comp, listed, words):
    cfg = load_config(make_config(tmp_path, comp, train={"aug": {"transforms": listed}}))  # not tried on load
    with pytest.raises(PipelineError) as e:
        preflight.check_augmentations(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"train.aug.transforms: {words}"), msg


def test_an_entry_without_a_name_is_refused_when_the_config_loads(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"aug": {"transforms": [{"p": 0.5}]}})
    with pytest.raises(PipelineError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: train.aug.transforms: [0]: expected a mapping with a 'name'")


def test_loading_a_config_with_a_list_imports_no_albumentations(tmp_path, comp):
    """Make loads configs at every call: the list is tried by preflight, before training."""
    path = make_config(tmp_path, comp, train={"aug": {"transforms": LISTED}})
    code = f"import sys; from pipeline.config_files import load_config; load_config({str(path)!r}); "
    code += "print('albumentations' in sys.modules, 'torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.stdout.strip() == "False False", res.stderr


def test_geometric_transforms_run_on_the_whole_image_before_the_crop_and_pixel_ones_on_the_crop(monkeypatch):
    t = data.train_transform(DC, Aug(transforms=LISTED))
    names = lambda c: [type(x).__name__ for x in c.transforms]  # noqa: E731
    assert names(t.before) == ["Affine", "RandomRotate90"]
    assert names(t.after) == ["CLAHE", "OneOf", "CoarseDropout"]
    groups = Aug(transforms=[{"name": "OneOf", "transforms": [{"name": "Transpose"}, {"name": "CLAHE"}]}])
    before, after = augment.split(groups.transforms)
    assert names(before) == ["OneOf"] and after is None  # a group that moves pixels goes first, whole
    seen = []
    for side in ("before", "after"):
        inner = getattr(t, side)

        def spy(image, inner=inner, side=side):
            seen.append((side, image.shape[:2]))
            return inner(image=image)

        monkeypatch.setattr(t, side, lambda image, spy=spy: spy(image))
    out = t(image=_image(shape=(60, 80)))["image"]
    assert seen == [("before", (60, 80)), ("after", (24, 24))] and tuple(out.shape) == (24, 24, 3)
    assert out.dtype == torch.uint8 and out.is_contiguous()


def test_without_a_list_the_fast_path_is_untouched():
    t = data.train_transform(DC, Aug())
    assert t.before is None and t.after is None


def test_each_image_draws_by_its_seed_in_any_order_and_in_loader_workers(tmp_path):
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(_image(i, (40, 52))).save(paths[-1])
    ds = data.ImageDataset(paths, np.arange(8) % 2, data.train_transform(DC, Aug(transforms=LISTED)))

    def epoch(workers: int) -> torch.Tensor:
        loader = data.make_loader(ds, 4, True, {"num_workers": workers} if workers else {})
        loader.sampler.set_epoch(3)
        return torch.cat([x for x, _ in loader])

    one = epoch(0)
    assert torch.equal(one, epoch(2)) and torch.equal(one, epoch(0))  # two worker processes draw alike
    views = {ds[(0, s)][0].numpy().tobytes() for s in range(6)}
    assert len(views) > 1  # and another epoch seed draws another view


def test_the_train_stamp_changes_with_the_list_and_only_with_it(tmp_path, comp):
    def stamp(transforms):
        aug = {"transforms": transforms} if transforms is not None else {}
        cfg = load_config(make_config(tmp_path, comp, train={"aug": aug}))
        return stamps.settings(cfg, "train")

    none, empty, listed = stamp(None), stamp([]), stamp(LISTED)
    assert stamps.same_settings(none, empty, set()) and stamps.matches(
        load_config(make_config(tmp_path, comp)), "train", none
    )
    assert listed != none and listed == stamp([dict(t) for t in LISTED])
    changed = [dict(t) for t in LISTED]
    changed[1] = {**changed[1], "p": 0.4}
    assert stamp(changed) != listed
    cfg = load_config(make_config(tmp_path, comp, train={"aug": {"transforms": LISTED}}))
    assert not stamps.matches(cfg, "train", none) and stamps.matches(cfg, "train", listed)


@pytest.mark.parametrize("policy", ["trivial", "rand-m9-mstd0.5"])
def test_a_policy_draws_by_the_images_seed_whatever_the_global_generators_hold(policy):
    t = data.train_transform(DC, Aug(policy=policy, color_jitter=0.0))

    def draws():
        out = []
        for seed in range(8):
            t.set_random_seed(seed)
            out.append(t(image=_image(seed))["image"].numpy())
        return out

    first = draws()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    assert all(np.array_equal(a, b) for a, b in zip(first, draws()))
    assert state[0] == random.getstate() and np.array_equal(state[1], np.random.get_state()[1])
    assert torch.equal(state[2], torch.get_rng_state())  # the training's own draws are left alone
    plain = data.train_transform(DC, Aug(color_jitter=0.0))
    changed = 0
    for seed in range(8):
        plain.set_random_seed(seed)
        changed += not np.array_equal(plain(image=_image(seed))["image"].numpy(), first[seed])
    assert changed >= 4  # the policy did something to most images


@pytest.mark.parametrize(
    "policy, words",
    [("foo", "expected trivial or a RandAugment string"), ("rand-m9-q3", "not a RandAugment string timm reads")],
)
def test_an_unknown_policy_is_one_line(tmp_path, comp, policy, words):
    path = make_config(tmp_path, comp, train={"aug": {"policy": policy}})
    with pytest.raises(PipelineError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: train.aug.policy: ") and words in str(e.value)


def test_random_erasing_works_on_the_device_batch_and_a_shard_erases_what_one_process_would():
    eraser = augment.Eraser(1.0, torch.device("cpu"))
    x = torch.zeros(6, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    whole = eraser(x.clone(), 5, 2)
    assert whole.device == x.device and all((whole[i] != 0).any() for i in range(6))
    assert not torch.equal(whole[0], whole[1])  # each image its own box and noise
    shards = [eraser(x[r::2].clone(), 5, 2, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(whole[0::2], shards[0]) and torch.equal(whole[1::2], shards[1])
    assert torch.equal(whole, eraser(x.clone(), 5, 2)) and not torch.equal(whole, eraser(x.clone(), 5, 3))
    assert not augment.Eraser(0.0, torch.device("cpu"))(x.clone(), 5, 2).any()  # probability 0: untouched
