"""Transfer learning: starting weights from a local timm file or a svdh checkpoint, never unpickled."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from svdh_exporter.checkpoint import load_network
from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_trainer.datasets import DatasetError
from svdh_trainer.initial_weights import initialise


def test_timm_safetensors_file_is_loaded_with_a_one_channel_stem(tmp_path: Path) -> None:
    torch.manual_seed(1)
    donor = timm.create_model("resnet18", pretrained=False)  # stands in for ImageNet weights copied locally
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    net = SvdhNet(ModelSpec("resnet18", num_classes=4))
    described = initialise(net, str(path))
    torch.testing.assert_close(net.backbone.conv1.weight, donor.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.backbone.layer4[1].conv2.weight, donor.layer4[1].conv2.weight)
    assert described.startswith("timm weights resnet18.safetensors (sha256 ")


def test_svdh_checkpoint_backbone_is_copied(trained: Path) -> None:
    donor, _ = load_network(trained)
    net = SvdhNet(ModelSpec("resnet18", num_classes=4, head="linear"))
    assert "svdh checkpoint tiny-test-model" in initialise(net, str(trained))
    for (name, mine), theirs in zip(net.backbone.state_dict().items(), donor.backbone.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_pickles_wrong_architectures_and_missing_files_are_refused(tmp_path: Path, trained: Path) -> None:
    pickled = tmp_path / "weights.pth"
    pickled.write_bytes(b"not even looked at")
    with pytest.raises(DatasetError, match="never unpickled"):
        initialise(SvdhNet(ModelSpec("resnet18", num_classes=4)), str(pickled))
    with pytest.raises(DatasetError, match="checkpoint is a resnet18, the recipe asks for mobilenetv2_050"):
        initialise(SvdhNet(ModelSpec("mobilenetv2_050", num_classes=4)), str(trained))
    with pytest.raises(DatasetError, match="no such weights file"):
        initialise(SvdhNet(ModelSpec("resnet18", num_classes=4)), str(tmp_path / "missing.safetensors"))
    other = timm.create_model("resnet10t", pretrained=False)
    wrong = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(wrong))
    with pytest.raises(DatasetError, match="weights do not fit resnet18"):
        initialise(SvdhNet(ModelSpec("resnet18", num_classes=4)), str(wrong))
