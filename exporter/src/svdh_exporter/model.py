"""The svdh network: a timm backbone, a score head and a severity head.

The score head knows its own analytic gradient with respect to the pooled
features, so Grad-CAM is computed with ordinary tensor ops
(:class:`CamGraph`) and exports to ONNX; autograd does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svdh_runtime.backends.base import GATE_OUTPUT, JOINT_OUTPUTS, OUTPUT_NAMES


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
    output_stride: int = 32  # 16 or 8 dilate the last stage(s): a finer feature map, a sharper CAM
    area_outputs: int = 0  # > 0: an auxiliary head predicting that many per-area grades (training only)
    joint_head: bool = False  # True: per-hand area grades, joint positions and the hands shown (exported)

    def __post_init__(self) -> None:
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, found {self.output_stride}")
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', found {self.head!r}")
        if self.score_std <= 0:
            raise ValueError("score_std must be > 0")
        if self.area_outputs < 0:
            raise ValueError("area_outputs must be >= 0")
        if self.joint_head and self.area_outputs:
            raise ValueError("joint_head replaces the auxiliary area head: set area_outputs = 0")

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


@dataclass(frozen=True)
class JointOutputs:
    """What the joint head says of a batch."""

    areas: torch.Tensor  # [N, 62] expected grade of each area (grade_columns order), 0..its maximum
    area_logits: torch.Tensor  # [N, 62] the same before the sigmoid (the training loss uses them)
    hands: torch.Tensor  # [N, 2] logit that the image shows the patient's left, right hand
    joints: torch.Tensor  # [N, 62, 2] each area's position (x, y) as fractions of the canvas width and height


class JointHead(nn.Module):
    """Where each joint is and how damaged each of its areas is, per hand.

    A 1x1 convolution gives one map per site (the 22 joints of a hand, times two
    hands); its spatial softmax is an attention over the feature map. The site's
    position is the attention-weighted mean of the cell centres (a soft argmax),
    and each area is graded from the features pooled under its site's attention:
    ``grade = max_grade * sigmoid(w_area . pooled_site + b_area)``. A linear layer
    on the globally pooled features says which hands the image shows.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        from svdh_runtime.areas import HANDS, SITES, area_sites, max_grades

        self.locator = nn.Conv2d(features, len(SITES) * len(HANDS), kernel_size=1)
        columns = len(area_sites())
        self.grader_weight = nn.Parameter(torch.randn(columns, features) * (features**-0.5))
        self.grader_bias = nn.Parameter(torch.zeros(columns))
        self.hands = nn.Linear(features, len(HANDS))
        self.register_buffer("area_site", torch.tensor(area_sites(), dtype=torch.long), persistent=False)
        self.register_buffer("max_grade", torch.tensor(max_grades(), dtype=torch.float32), persistent=False)

    def forward(self, maps: torch.Tensor, pooled: torch.Tensor) -> JointOutputs:
        n, _, height, width = maps.shape
        attention = torch.softmax(self.locator(maps).flatten(2), dim=-1)  # [N, S, h*w]
        ys = (torch.arange(height, dtype=maps.dtype, device=maps.device) + 0.5) / height
        xs = (torch.arange(width, dtype=maps.dtype, device=maps.device) + 0.5) / width
        grid = torch.stack(
            [xs[None, :].expand(height, width).reshape(-1), ys[:, None].expand(height, width).reshape(-1)], dim=1
        )  # [h*w, 2] cell centres (x, y)
        sites = attention @ grid  # [N, S, 2]
        site_features = attention @ maps.flatten(2).transpose(1, 2)  # [N, S, C]
        area_features = site_features.index_select(1, self.area_site)  # [N, 62, C]
        logits = (area_features * self.grader_weight).sum(dim=-1) + self.grader_bias
        return JointOutputs(
            areas=torch.sigmoid(logits) * self.max_grade,
            area_logits=logits,
            hands=self.hands(pooled),
            joints=sites.index_select(1, self.area_site),
        )


class SvdhNet(nn.Module):
    """Backbone -> last-stage feature map -> global average pool -> score and severity logits."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        import timm

        self.spec = spec
        stride = {} if spec.output_stride == 32 else {"output_stride": spec.output_stride}
        self.backbone = timm.create_model(
            spec.architecture, pretrained=False, num_classes=0, global_pool="", in_chans=1, **stride
        )
        features = self.backbone.num_features
        self.dropout = nn.Dropout(spec.dropout)
        self.score_head = LinearScoreHead(features) if spec.head == "linear" else MlpScoreHead(features, spec.hidden)
        self.severity_head = nn.Linear(features, spec.num_classes)
        # Auxiliary per-area grades from the same pooled features: trained jointly, not exported.
        self.area_head = nn.Linear(features, spec.area_outputs) if spec.area_outputs else None
        self.joint_head = JointHead(features) if spec.joint_head else None

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """Output of the last convolutional stage, ``[N, C, h, w]``."""
        return self.backbone.forward_features(image)

    def forward(
        self, image: torch.Tensor, local: bool = False, areas: bool = False, joints: bool = False
    ) -> tuple[torch.Tensor | JointOutputs, ...]:
        """Score in points ``[N]`` and severity logits ``[N, K]``, then the extras asked for.

        With ``local`` (linear score head only), also the standardised score head
        applied at every location of the feature map ``[N, h, w]``; its mean over
        the locations is the standardised score (before dropout). With ``areas``,
        also the auxiliary head's per-area grades as fractions of each area's
        maximum ``[N, area_outputs]``. With ``joints``, also the joint head's
        :class:`JointOutputs` (on the pooled features before dropout).
        """
        maps = self.feature_map(image)
        clean = maps.mean(dim=(2, 3))
        pooled = self.dropout(clean)
        outputs = [self.score_head(pooled) * self.spec.score_std + self.spec.score_mean, self.severity_head(pooled)]
        if local:
            if not isinstance(self.score_head, LinearScoreHead):
                raise ValueError("per-location scores need the linear score head")
            fc = self.score_head.fc
            outputs.append(torch.einsum("nchw,c->nhw", maps, fc.weight[0]) + fc.bias[0])
        if areas:
            if self.area_head is None:
                raise ValueError("this network has no per-area head (area_outputs = 0)")
            outputs.append(self.area_head(pooled))
        if joints:
            if self.joint_head is None:
                raise ValueError("this network has no joint head (joint_head = false)")
            outputs.append(self.joint_head(maps, clean))
        return tuple(outputs)


def cam_target_layer(net: SvdhNet) -> nn.Module:
    """The timm module whose output is the last-stage feature map (Grad-CAM's target layer)."""
    backbone = net.backbone
    for name in ("bn2", "layer4", "norm_pre", "final_conv", "stages", "s4"):
        module = getattr(backbone, name, None)
        if module is not None and not isinstance(module, nn.Identity):
            return module
    raise ValueError(f"no known last-stage layer for {net.spec.architecture}")


def score_cam_and_pooled(net: SvdhNet, image: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Score, severity logits, the signed Grad-CAM map of ``scale * score``, the pooled features and the
    feature map, in one pass.

    Grad-CAM weights are the spatial mean of d(scale * score) / d feature map.
    Through a global average pool that is scale * (d score / d pooled) / (h * w),
    which the score head provides analytically; the map is sum_c weight_c * map_c
    (before the ReLU).
    """
    spec = net.spec
    maps = net.feature_map(image)
    pooled = maps.mean(dim=(2, 3))
    value, grad = net.score_head.value_and_grad(pooled)
    score = value * spec.score_std + spec.score_mean
    weights = grad * (scale * spec.score_std / (maps.shape[2] * maps.shape[3]))
    signed_cam = (weights[:, :, None, None] * maps).sum(dim=1)
    return score, net.severity_head(pooled), signed_cam, pooled, maps


def score_and_cam(net: SvdhNet, image: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    """:func:`score_cam_and_pooled` without the pooled features."""
    return score_cam_and_pooled(net, image, scale)[:3]


def graph_output_names(joint_head: bool, gate: bool) -> tuple[str, ...]:
    """The outputs of an export graph, in order."""
    return OUTPUT_NAMES + (JOINT_OUTPUTS if joint_head else ()) + ((GATE_OUTPUT,) if gate else ())


def exported_joints(joints: JointOutputs, canvas: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """The joint head as a graph returns it: grades, hand probabilities, positions in canvas pixels."""
    scale = torch.tensor([float(canvas[1]), float(canvas[0])], dtype=joints.joints.dtype)
    return joints.areas, torch.sigmoid(joints.hands), joints.joints * scale


class OodDistance(nn.Module):
    """Distance of pooled features to the training distribution (Mahalanobis in a PCA subspace plus residual).

    With c = f - mean, z = P^T c (the top-k principal directions) and r = c - P z:
    d = sqrt((sum_i z_i^2 / lambda_i + |r|^2 / rho) / (k + 1)), where lambda are the
    principal variances and rho the mean squared residual on the fitting images, so
    d is about 1 for images like those.
    """

    def __init__(self, mean: torch.Tensor, directions: torch.Tensor, variances: torch.Tensor, residual: float) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("directions", directions.float())
        self.register_buffer("inverse_std", variances.float().clamp_min(1e-12).rsqrt())
        self.residual_scale = 1.0 / max(float(residual), 1e-12)
        self.terms = float(directions.shape[1] + 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        centred = features - self.mean
        projected = centred @ self.directions
        residual = centred - projected @ self.directions.T
        whitened = projected * self.inverse_std
        squared = (whitened * whitened).sum(dim=1) + (residual * residual).sum(dim=1) * self.residual_scale
        return torch.sqrt(squared / self.terms)


class CamGraph(nn.Module):
    """Export wrapper for one network: ``image -> (score, severity_probs, cam[, areas, hands, joints])``,
    cam = ReLU(Grad-CAM); see :func:`graph_output_names`."""

    def __init__(self, net: SvdhNet) -> None:
        super().__init__()
        self.net = net
        self.ood: OodDistance | None = None  # set by the exporter: a last output, ood_distance

    @property
    def output_names(self) -> tuple[str, ...]:
        return graph_output_names(self.net.joint_head is not None, self.ood is not None)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The pooled features the distance is computed on, ``[N, C]``."""
        return self.net.feature_map(image).mean(dim=(2, 3))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        score, logits, signed_cam, pooled, maps = score_cam_and_pooled(self.net, image)
        outputs = (score, torch.softmax(logits, dim=-1), torch.relu(signed_cam))
        if self.net.joint_head is not None:
            outputs += exported_joints(self.net.joint_head(maps, pooled), tuple(image.shape[2:]))
        return outputs if self.ood is None else (*outputs, self.ood(pooled))


def resampling_matrix(size_in: int, size_out: int, method: str = "bilinear") -> torch.Tensor:
    """``[size_out, size_in]`` matrix of the runtime's 1-D resize: ``resize(x)`` along an axis equals ``R @ x``.

    Built by resizing the identity with :func:`svdh_runtime.preprocess.resize`, so
    in-graph resampling is the preprocessing's own (antialiased Pillow) filter.
    """
    from svdh_runtime.preprocess import resize

    identity = np.eye(size_in, dtype=np.float32)
    return torch.from_numpy(np.array(resize(identity, size_out, size_in, method), dtype=np.float32))


class EnsembleCamGraph(nn.Module):
    """Export wrapper for an ensemble: members, a linear combiner and a combined Grad-CAM in one graph.

    The combined score is ``bias + sum_m weight_m * score_m`` (averaging: weight 1/M,
    bias 0; stacking: a meta-learner's coefficients). Each member sees the
    ensemble canvas resampled to its own input size with the preprocessing's own
    (Pillow) filter, as two constant matrix products (:func:`resampling_matrix`). The
    combined CAM is the Grad-CAM of the combined score: for member m the gradient
    through the combiner is weight_m * d score_m / d map_m, so its map is
    ReLU(sum_c weight_m * mean_grad_c * map_c); the members' maps are resampled
    (bilinear) to the finest member grid and summed. Severity probabilities are the
    mean of the members' probabilities. Members with joint heads (all or none) give
    the mean of their area grades, hand probabilities and joint positions.
    """

    def __init__(
        self,
        nets: list[SvdhNet],
        input_sizes: list[tuple[int, int]],
        weights: list[float],
        bias: float,
        canvas: tuple[int, int],
        resample: str = "bilinear",
    ) -> None:
        super().__init__()
        if not (len(nets) == len(input_sizes) == len(weights)) or not nets:
            raise ValueError("an ensemble needs one input size and one weight per member")
        self.members = nn.ModuleList(nets)
        self.input_sizes = [tuple(size) for size in input_sizes]
        self.canvas = tuple(canvas)
        for index, (height, width) in enumerate(self.input_sizes):
            self.register_buffer(f"rows_{index}", resampling_matrix(self.canvas[0], height, resample), persistent=False)
            self.register_buffer(
                f"cols_{index}", resampling_matrix(self.canvas[1], width, resample).T, persistent=False
            )
        self.weights = [float(w) for w in weights]
        self.bias = float(bias)
        with torch.no_grad():
            probe = torch.zeros(1, 1, *self.canvas)
            grids = [tuple(net.feature_map(self._member_input(probe, i)).shape[2:]) for i, net in enumerate(nets)]
        self.grid = max(grids, key=lambda g: g[0] * g[1])
        heads = {net.joint_head is not None for net in nets}
        if len(heads) > 1:
            raise ValueError("either every member of an ensemble has a joint head or none has")
        self.joint_head = heads.pop()
        self.ood: OodDistance | None = None  # set by the exporter: a last output, ood_distance

    @property
    def output_names(self) -> tuple[str, ...]:
        return graph_output_names(self.joint_head, self.ood is not None)

    def _member_input(self, image: torch.Tensor, index: int) -> torch.Tensor:
        if self.input_sizes[index] == self.canvas:
            return image
        return getattr(self, f"rows_{index}") @ image @ getattr(self, f"cols_{index}")

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The members' pooled features side by side, ``[N, sum C_m]``."""
        return torch.cat(
            [net.feature_map(self._member_input(image, i)).mean(dim=(2, 3)) for i, net in enumerate(self.members)],
            dim=1,
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        score = torch.full_like(image[:, 0, 0, 0], self.bias)
        probs, cam, pooled, joints = None, None, [], []
        for index, (net, weight) in enumerate(zip(self.members, self.weights)):
            member_score, logits, signed_cam, member_pooled, maps = score_cam_and_pooled(
                net, self._member_input(image, index), weight
            )
            pooled.append(member_pooled)
            if self.joint_head:
                joints.append(exported_joints(net.joint_head(maps, member_pooled), self.canvas))
            member_cam = torch.relu(signed_cam)
            if tuple(member_cam.shape[1:]) != self.grid:
                member_cam = F.interpolate(member_cam[:, None], size=self.grid, mode="bilinear", align_corners=False)[
                    :, 0
                ]
            member_probs = torch.softmax(logits, dim=-1)
            score = score + weight * member_score
            probs = member_probs if probs is None else probs + member_probs
            cam = member_cam if cam is None else cam + member_cam
        outputs = (score, probs / len(self.members), cam)
        if joints:
            outputs += tuple(torch.stack(parts).mean(dim=0) for parts in zip(*joints))
        return outputs if self.ood is None else (*outputs, self.ood(torch.cat(pooled, dim=1)))
