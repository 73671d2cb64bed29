"""Fine-tuning schemes: which parameters train, and at which learning rate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_trainer.config import config_from_dict
from svdh_trainer.datasets import DatasetError
from svdh_trainer.finetune import parameter_groups, set_trainable


def _net() -> SvdhNet:
    torch.manual_seed(0)
    return SvdhNet(ModelSpec("resnet18", num_classes=4))


def _step(net: SvdhNet, scheme: str, epoch: int, head_epochs: int = 1) -> tuple[bool, bool]:
    """One optimiser step; returns (backbone changed, heads changed)."""
    net.train()
    set_trainable(net, scheme, epoch, head_epochs)
    optimiser = torch.optim.AdamW(parameter_groups(net, scheme, 1e-2, 0.0, 0.75))
    before_backbone = net.backbone.conv1.weight.detach().clone()
    before_head = net.score_head.fc.weight.detach().clone()
    score, logits = net(torch.randn(4, 1, 64, 64))
    (score.square().mean() + F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))).backward()
    optimiser.step()
    return (
        not torch.equal(before_backbone, net.backbone.conv1.weight),
        not torch.equal(before_head, net.score_head.fc.weight),
    )


def test_full_trains_everything() -> None:
    assert _step(_net(), "full", 1) == (True, True)


def test_head_only_freezes_the_backbone_and_its_statistics() -> None:
    net = _net()
    running_mean = net.backbone.bn1.running_mean.clone()
    assert _step(net, "head", 1) == (False, True)
    assert torch.equal(running_mean, net.backbone.bn1.running_mean)
    assert _step(net, "head", 5) == (False, True)


def test_two_stage_unfreezes_after_the_head_epochs() -> None:
    net = _net()
    assert _step(net, "two_stage", 1, head_epochs=2) == (False, True)
    assert _step(net, "two_stage", 2, head_epochs=2) == (False, True)
    assert _step(net, "two_stage", 3, head_epochs=2) == (True, True)


def test_layer_wise_decay_gives_lower_rates_toward_the_input() -> None:
    net = _net()
    groups = parameter_groups(net, "llrd", 1e-3, 0.01, 0.5)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    stem, last_stage = rate[id(net.backbone.conv1.weight)], rate[id(net.backbone.layer4[1].conv2.weight)]
    head = rate[id(net.score_head.fc.weight)]
    assert stem < last_stage <= head == pytest.approx(1e-3)
    assert len(rate) == len(list(net.parameters()))  # every parameter in exactly one group


def test_unknown_scheme_is_a_recipe_error() -> None:
    with pytest.raises(DatasetError, match="finetune must be one of full, head, two_stage, llrd"):
        config_from_dict({"data": {"train": "x"}, "train": {"finetune": "partial"}})
