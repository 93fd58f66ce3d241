"""pipeline/bn_fold.py: a head-only phase's copy of the model with its frozen BatchNorm folded."""

import pytest
import timm
import torch

from pipeline import bn_fold, optim

CPU = torch.device("cpu")


def _frozen(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    optim.set_frozen(model, True)
    with torch.no_grad():  # statistics a fresh model lacks, so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_byobnet"])
def test_the_copy_computes_the_model_and_trains_its_head(name):
    model = _frozen(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = bn_fold.folded_copy(model, 32, CPU)
    assert twin is not None and any(isinstance(m, bn_fold.ActOnly) for m in twin.modules())
    assert twin.get_classifier() is model.get_classifier()
    x = torch.randn(4, 3, 32, 32)
    for m in (model, twin):  # as a head-only step runs them
        m.train()
        optim.freeze_bn(m)
    want = model(x)
    assert torch.allclose(twin(x), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    opt = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.1)
    twin(x).square().mean().backward()
    opt.step()
    after = model.state_dict()
    head = {k for k, p in model.named_parameters() if p.requires_grad}
    assert head and all(not torch.equal(after[k], before[k]) for k in head)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in head)  # the backbone untouched


class Residual(torch.nn.Module):
    """A convolution whose output the BatchNorm normalises and the sum uses raw too."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3, 2)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        c = self.conv(x)
        return self.fc((self.bn(c) + c).mean((2, 3)))


def test_a_convolution_used_elsewhere_too_is_not_folded():
    model = Residual()
    for p in (*model.conv.parameters(), *model.bn.parameters()):
        p.requires_grad_(False)
    with torch.no_grad():
        model.bn.running_mean.fill_(1.0)
    assert bn_fold.conv_bn_pairs(model, torch.randn(2, 3, 8, 8)) == [("conv", "bn")]  # the tensors alone pair
    assert bn_fold.folded_copy(model, 8, CPU) is None  # the check on a forward refuses the copy


def test_nothing_to_fold_in_all_layers_or_without_batchnorm():
    model = timm.create_model("test_efficientnet", num_classes=3)
    optim.set_frozen(model, False)  # every BatchNorm trains
    assert bn_fold.folded_copy(model, 32, CPU) is None
    vit = timm.create_model("test_vit", num_classes=3)
    optim.set_frozen(vit, True)
    assert bn_fold.folded_copy(vit, 160, CPU) is None
