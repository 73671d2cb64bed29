"""The CAM computed inside the exported graph equals pytorch-grad-cam's Grad-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM

from svdh_exporter.model import CamGraph, ModelSpec, SvdhNet, cam_target_layer
from svdh_exporter.onnx_export import export_onnx
from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend


class _ScoreOnly(torch.nn.Module):
    def __init__(self, net: SvdhNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)[0]


def _reference_cam(net: SvdhNet, image: torch.Tensor) -> np.ndarray:
    """Raw (pre-normalisation) Grad-CAM maps of the score from pytorch-grad-cam."""
    cam = GradCAM(model=_ScoreOnly(net), target_layers=[cam_target_layer(net)])
    cam(image, targets=[lambda output: output] * len(image))
    activations = cam.activations_and_grads.activations[0].detach().cpu().numpy()
    gradients = cam.activations_and_grads.gradients[0].detach().cpu().numpy()
    raw = cam.get_cam_image(image, None, None, activations, gradients)
    return np.maximum(raw, 0)


def _perturb_heads(net: SvdhNet, seed: int) -> None:
    """Give the heads weights a trained model could have (default init makes many CAMs all zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(net.score_head.parameters()):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


@pytest.mark.parametrize(
    "architecture, head",
    [("resnet18", "linear"), ("mobilenetv2_050", "mlp"), ("efficientnet_b0", "linear"), ("regnetx_002", "linear")],
)
def test_exported_cam_matches_pytorch_grad_cam(architecture: str, head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SvdhNet(ModelSpec(architecture, num_classes=4, head=head, hidden=64, score_mean=40.0, score_std=35.0)).eval()
    _perturb_heads(net, 1)
    path = tmp_path / "model.onnx"
    export_onnx(CamGraph(net).eval(), torch.randn(2, 1, 128, 160), path, log=lambda _: None)
    image = torch.randn(3, 1, 128, 160)
    exported = OnnxRuntimeBackend(path.read_bytes()).infer(image.numpy())["cam"]
    reference = _reference_cam(net, image)
    assert exported.shape == reference.shape
    for got, want in zip(exported, reference):
        assert want.max() > 0, "reference CAM is all zero; the comparison would be empty"
        correlation = np.corrcoef(got.ravel(), want.ravel())[0, 1]
        assert correlation >= 0.999
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.max()))


def test_linear_head_cam_is_the_weighted_feature_sum() -> None:
    """For pool + linear head, Grad-CAM is ReLU(sum_c w_c * std / (h*w) * A_c); flipping w flips the sign."""
    torch.manual_seed(0)
    net = SvdhNet(ModelSpec("resnet18", num_classes=4, score_std=20.0)).eval()
    _perturb_heads(net, 2)
    image = torch.randn(1, 1, 128, 160)
    with torch.no_grad():
        maps = net.feature_map(image)
        weights = net.score_head.fc.weight[0] * 20.0 / (maps.shape[2] * maps.shape[3])
        signed = (weights[None, :, None, None] * maps).sum(1)
        before = CamGraph(net)(image)[2]
        net.score_head.fc.weight.neg_()
        after = CamGraph(net)(image)[2]
    torch.testing.assert_close(before, torch.relu(signed))
    torch.testing.assert_close(before - after, signed)
