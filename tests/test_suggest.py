"""The nearest names to a mistyped one: a one-character slip (a look-alike, a case, a swap, a
missing letter) in a backbone name or a config key puts the intended name first."""

import pytest
import timm
from helpers import make_competition, make_config

from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.suggest import distance, nearest


def test_case_and_look_alikes_cost_a_fraction_of_an_edit_and_a_swap_one():
    assert distance("lite0", "lite0") == 0
    assert distance("Lite0", "lite0") == pytest.approx(0.1)
    assert distance("liteO", "lite0") == pytest.approx(0.3) and distance("resnetl8", "resnet18") == pytest.approx(0.3)
    assert distance("lable", "label") == 1 and distance("lite", "lite0") == 1 and distance("lite4", "lite0") == 1


@pytest.mark.parametrize(
    "typed, meant",
    [
        ("tf_efficientnet_liteO", "tf_efficientnet_lite0"),  # a capital O for the zero
        ("tf_efficientnet_Lite0", "tf_efficientnet_lite0"),
        ("tf_efficientnet_lte0", "tf_efficientnet_lite0"),
        ("resnetl8", "resnet18"),  # an l for the one
        ("resnet-50", "resnet50"),
        ("convnext_tiy", "convnext_tiny"),
        ("vit_small_patch16_244", "vit_small_patch16_224"),
        ("efficientnet_bO", "efficientnet_b0"),
    ],
)
def test_a_one_character_slip_in_a_backbone_gets_the_intended_name_first(typed, meant):
    assert nearest(typed, timm.list_models())[0] == meant


@pytest.mark.parametrize(
    "override, meant",
    [
        ("train.optimzer=adamw", "'train.optimzer'; did you mean optimizer?"),
        ("model.img_sise=64", "'model.img_sise'; did you mean img_size?"),
        ("trian.seed=1", "'trian'; did you mean train?"),
        ("train.phases.0.epoch=2", "'train.phases.0.epoch'; did you mean epochs?"),
        ("train.ema.decy=0.9", "'train.ema.decy'; did you mean decay?"),
        ("data.lable_col=x", "'data.lable_col'; did you mean label_col?"),
    ],
)
def test_an_unknown_config_key_is_answered_with_the_nearest_key_of_its_section(tmp_path, override, meant):
    config = make_config(tmp_path, make_competition(tmp_path / "comp", n_train=8, n_test=2))
    with pytest.raises(PipelineError, match=f"unknown key {meant.replace('?', '[?]')}$"):
        load_config(config, [override])


def test_nothing_near_says_nothing():
    assert nearest("zzzzzzzz", ["train", "model", "data"]) == []
