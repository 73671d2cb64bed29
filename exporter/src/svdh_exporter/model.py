"""The svdh network: a timm backbone, a score head and a severity head.

The score head knows its own analytic gradient with respect to the pooled
features, so Grad-CAM is computed with ordinary tensor ops
(:class:`CamGraph`) and exports to ONNX; autograd does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one network; stored beside its weights in a checkpoint."""

    architecture: str  # any timm model name
    num_classes: int
    head: str = "linear"  # "linear" or "mlp"
    hidden: int = 256
    dropout: float = 0.2
    score_mean: float = 0.0  # the score head predicts (score - mean) / std
    score_std: float = 1.0

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', found {self.head!r}")
        if self.score_std <= 0:
            raise ValueError("score_std must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


class LinearScoreHead(nn.Module):
    """z = w . p + b; dz/dp = w."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled).squeeze(-1)

    def value_and_grad(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(pooled), self.fc.weight.expand(pooled.shape[0], -1)


class MlpScoreHead(nn.Module):
    """z = w2 . gelu(W1 p + b1) + b2, with its exact vector-Jacobian product."""

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(pooled))).squeeze(-1)

    def value_and_grad(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.fc1(pooled)
        value = self.fc2(F.gelu(hidden)).squeeze(-1)
        cdf = 0.5 * (1.0 + torch.erf(hidden / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * hidden * hidden) / math.sqrt(2.0 * math.pi)
        grad_hidden = self.fc2.weight * (cdf + hidden * pdf)  # [N, hidden]
        return value, grad_hidden @ self.fc1.weight


class SvdhNet(nn.Module):
    """Backbone -> last-stage feature map -> global average pool -> score and severity logits."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        import timm

        self.spec = spec
        self.backbone = timm.create_model(
            spec.architecture, pretrained=False, num_classes=0, global_pool="", in_chans=1
        )
        features = self.backbone.num_features
        self.dropout = nn.Dropout(spec.dropout)
        self.score_head = LinearScoreHead(features) if spec.head == "linear" else MlpScoreHead(features, spec.hidden)
        self.severity_head = nn.Linear(features, spec.num_classes)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """Output of the last convolutional stage, ``[N, C, h, w]``."""
        return self.backbone.forward_features(image)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score in points ``[N]`` and severity logits ``[N, K]``."""
        pooled = self.dropout(self.feature_map(image).mean(dim=(2, 3)))
        score = self.score_head(pooled) * self.spec.score_std + self.spec.score_mean
        return score, self.severity_head(pooled)


def cam_target_layer(net: SvdhNet) -> nn.Module:
    """The timm module whose output is the last-stage feature map (Grad-CAM's target layer)."""
    backbone = net.backbone
    for name in ("bn2", "layer4", "norm_pre", "final_conv", "stages"):
        module = getattr(backbone, name, None)
        if module is not None and not isinstance(module, nn.Identity):
            return module
    raise ValueError(f"no known last-stage layer for {net.spec.architecture}")


class CamGraph(nn.Module):
    """Export wrapper: ``image -> (score, severity_probs, cam)`` in one pass.

    Grad-CAM weights are the spatial mean of d score / d feature map. Through a
    global average pool that is (d score / d pooled) / (h * w), which the score
    head provides analytically; the CAM is ReLU(sum_c weight_c * map_c).
    """

    def __init__(self, net: SvdhNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spec = self.net.spec
        maps = self.net.feature_map(image)
        pooled = maps.mean(dim=(2, 3))
        value, grad = self.net.score_head.value_and_grad(pooled)
        score = value * spec.score_std + spec.score_mean
        weights = grad * (spec.score_std / (maps.shape[2] * maps.shape[3]))
        cam = torch.relu((weights[:, :, None, None] * maps).sum(dim=1))
        probs = torch.softmax(self.net.severity_head(pooled), dim=-1)
        return score, probs, cam
