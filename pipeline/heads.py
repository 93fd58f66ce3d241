"""What sits between a timm backbone's features and its outputs beyond timm's own: GeM pooling, an
embedding neck, and the margin heads of face recognition and whale identification (ArcFace,
sub-center ArcFace, CosFace), whose logits are scaled cosines between the embedding and each class's
centre; and the embedding a retrieval task ranks by.

The margin itself is the loss's (losses.MarginLoss): the head's forward takes no labels, so a
margin head predicts classes like any other (softmax of its cosine logits) through TTA, DDP, the
head-only phase's pooled features and checkpoints. pytorch-metric-learning's ArcFaceLoss keeps the
class centres inside the loss; here they are the model's classifier, saved and rebuilt with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config.model import margin_of
from .errors import PipelineError


class GeM(nn.Module):
    """Generalised mean pooling (Radenovic et al.): (mean x^p)^(1/p) over the positions, p learnt
    (1: average pooling, large: max pooling); timm's pooling layer's interface."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = nn.Parameter(torch.full((1,), p)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float().clamp(min=1.0)
        pooled = x.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
        return pooled.to(x.dtype)

    def is_identity(self) -> bool:
        return False

    def feat_mult(self) -> int:
        return 1


class Neck(nn.Module):
    """The embedding: a linear layer to `size`, then BatchNorm (the pooled features' scale fixed)."""

    def __init__(self, in_features: int, size: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(in_features, size, bias=False), nn.BatchNorm1d(size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(f))


class LinearHead(nn.Module):
    """A neck and a plain linear classifier (model.head linear with model.embedding_size)."""

    def __init__(self, in_features: int, num_classes: int, size: int):
        super().__init__()
        self.neck, self.fc = Neck(in_features, size), nn.Linear(size, num_classes)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return self.neck(f)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.neck(f))


class MarginHead(nn.Module):
    """Logits = scale x cosine(embedding, class centre); sub-center: the nearest of `subcenters`
    centres per class. `kind`, `margin` and `scale` are what the loss adds its margin with."""

    def __init__(self, in_features: int, num_classes: int, kind: str, scale: float, margin: float, subcenters: int = 1,
                 size: int | None = None):  # fmt: skip
        super().__init__()
        self.kind, self.scale, self.margin, self.k = kind, scale, margin, subcenters
        self.neck = Neck(in_features, size) if size else nn.Identity()
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, size or in_features))
        nn.init.xavier_uniform_(self.weight)

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return self.neck(f)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(self.neck(f).float()), F.normalize(self.weight.float()))
        if self.k > 1:
            cos = cos.view(len(cos), -1, self.k).amax(-1)
        return cos * self.scale


def classifier_name(model: nn.Module) -> str:
    """The classifier's module path, as timm names it in the pretrained config (fc, head.fc, ...)."""
    name = model.pretrained_cfg.get("classifier")
    name = name[0] if isinstance(name, (tuple, list)) else name
    if not name or model.get_submodule(name) is not model.get_classifier():
        raise PipelineError(f"model.head: cannot find {type(model).__name__}'s classifier to replace")
    return name


def _put(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def attach(model: nn.Module, m: dict, num_classes: int) -> nn.Module:
    """The config's pooling and head on a timm model built with an ordinary one (`m`: the model
    section as a dict, as checkpoints hold it): GeM in place of global_pool, a neck and/or a margin
    head in place of the classifier. Untouched for the plain avg-pool linear head."""
    if m.get("global_pool") == "gem":
        if not hasattr(model, "global_pool") or not hasattr(model.global_pool, "pool_type"):
            raise PipelineError(f"model.global_pool: gem needs a CNN with timm's global_pool (not {m['backbone']})")
        model.global_pool = GeM()
    head, size = m.get("head", "linear"), m.get("embedding_size")
    if head == "linear" and not size:
        return model
    old = model.get_classifier()
    in_features = getattr(old, "in_features", None) or model.num_features
    if head == "linear":
        new = LinearHead(in_features, num_classes, size)
    else:
        k = m.get("subcenters", 3) if head == "subcenter_arcface" else 1
        margin = margin_of(head, m.get("margin"))
        new = MarginHead(in_features, num_classes, head, m.get("scale", 30.0), margin, k, size)
    _put(model, classifier_name(model), new)
    return model


class Embedder(nn.Module):
    """A trained model's embedding (the neck's output, or the pooled features where there is no
    neck) in place of its logits: what a retrieval task's nearest neighbours compare."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        head = self.model.get_classifier()
        return head.embed(f) if hasattr(head, "embed") else f


class Unit:
    """engine.activate's `act` for embeddings: each view's embedding to unit length."""

    @staticmethod
    def output(e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e.float(), dim=-1)
