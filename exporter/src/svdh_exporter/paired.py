"""The paired network: a baseline and a follow-up film through one backbone, the change of every area.

Trial readers score a patient's films side by side; the change they record is
far more repeatable than the difference of two scores read apart. The paired
network does the same. Both films go through the same backbone (a trained
:class:`~.model.SvdhNet` with a joint head, whose locator finds every joint's
site in each film). For each area it takes the features pooled at that area's
site in the follow-up (``f``) and in the baseline (``b``), and gives

    g(d, b) = softplus(w_area . gelu(M [d; b] + m) + c_area)
    change  = max(0, g(f - b, b) - g(0, b))

``g(0, b)`` is what the head says of the baseline seen twice: subtracting it
leaves no floor, so two films with nothing between them give exactly no
change. No area's change is ever negative (damage does not heal, as the
protocol scores it), and the change of a total is the sum of its areas'. ``M``
is shared by every area; ``w_area`` and ``c_area`` are each area's own.
Training fits ``g(f - b, b) - g(0, b)`` before the ``max`` (``raw``), so every
area keeps its gradient.

The change's CAM (:meth:`PairedChangeNet.change_cam`) is HiResCAM (Draelos &
Carin, 2020), the gradient-times-activation member of the Grad-CAM family,
of the total change with respect to the follow-up's feature map, holding the
site attention fixed: ``cam(p) = ReLU(sum_a shown_a attention_a(p) g_a .
map(p))``, where ``g_a`` is d change_a / d f_a, written out analytically so the
map is computed inside the exported graph. Unlike Grad-CAM's spatial mean of
the gradient, it stays at the joints whose change it explains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .model import ModelSpec, SvdhNet

PAIRED_OUTPUTS = ("change_areas", "hands", "change_cam")  # the exported graph's outputs, in order
PAIRED_INPUTS = ("baseline", "followup")


@dataclass(frozen=True)
class PairedSpec:
    """The paired network: its backbone's spec and the change head's width."""

    backbone: ModelSpec
    hidden: int = 128

    def to_dict(self) -> dict:
        return {"backbone": self.backbone.to_dict(), "hidden": self.hidden}

    @classmethod
    def from_dict(cls, data: dict) -> PairedSpec:
        return cls(ModelSpec(**data["backbone"]), int(data["hidden"]))


@dataclass(frozen=True)
class ChangeOutputs:
    areas: torch.Tensor  # [N, 62] change of each area (grade points, >= 0), grade_columns() order
    raw: torch.Tensor  # [N, 62] the change before the max(0, .) (what training fits)
    hands: torch.Tensor  # [N, 2] logits that the follow-up shows the left, right hand
    logits: torch.Tensor  # [N, 62] of g(f - b, b) before the softplus
    hidden: torch.Tensor  # [N, 62, hidden] the shared layer before the GELU (for the CAM)
    attention: torch.Tensor  # [N, 62, h*w] the follow-up's site attention of each area
    maps: torch.Tensor  # [N, C, h, w] the follow-up's feature map


class PairedChangeNet(nn.Module):
    """Baseline and follow-up -> the change of every area (see the module's docstring)."""

    def __init__(self, spec: PairedSpec, net: SvdhNet | None = None) -> None:
        super().__init__()
        if not spec.backbone.joint_head:
            raise ValueError("the paired network needs a backbone with a joint head (its sites)")
        self.spec = spec
        self.net = net if net is not None else SvdhNet(spec.backbone)
        features = self.net.backbone.num_features
        head = self.net.joint_head
        columns = head.area_site.shape[0]
        self.mix = nn.Linear(2 * features, spec.hidden)
        self.area_weight = nn.Parameter(torch.randn(columns, spec.hidden) * spec.hidden**-0.5)
        self.area_bias = nn.Parameter(torch.zeros(columns))

    def _sites(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each area's site attention ``[N, 62, h*w]`` and pooled features ``[N, 62, C]``."""
        head = self.net.joint_head
        attention = torch.softmax(head.locator(maps).flatten(2), dim=-1).index_select(1, head.area_site)
        return attention, attention @ maps.flatten(2).transpose(1, 2)

    def forward(self, baseline: torch.Tensor, followup: torch.Tensor) -> ChangeOutputs:
        return self.from_maps(self.net.feature_map(baseline), self.net.feature_map(followup))

    def trunk(self, image: torch.Tensor) -> torch.Tensor:
        """The backbone up to its last stage (what a fit may compute once and keep frozen)."""
        backbone = self.net.backbone
        x = backbone.maxpool(backbone.act1(backbone.bn1(backbone.conv1(image))))
        return backbone.layer3(backbone.layer2(backbone.layer1(x)))

    def last_stage(self, trunk: torch.Tensor) -> torch.Tensor:
        """The feature map from :meth:`trunk`'s output: ``trunk`` then this equals the backbone."""
        return self.net.backbone.layer4(trunk)

    def from_maps(self, maps_before: torch.Tensor, maps_after: torch.Tensor) -> ChangeOutputs:
        """The change from the two films' feature maps."""
        _, before = self._sites(maps_before)
        attention, after = self._sites(maps_after)
        hidden = self.mix(torch.cat([after - before, before], dim=-1))  # [N, 62, hidden]
        reference = self.mix(torch.cat([torch.zeros_like(before), before], dim=-1))  # the baseline seen twice
        logits = (F.gelu(hidden) * self.area_weight).sum(dim=-1) + self.area_bias
        unchanged = (F.gelu(reference) * self.area_weight).sum(dim=-1) + self.area_bias
        raw = F.softplus(logits) - F.softplus(unchanged)
        hands = self.net.joint_head.hands(maps_after.mean(dim=(2, 3)))
        return ChangeOutputs(torch.relu(raw), raw, hands, logits, hidden, attention, maps_after)

    def change_cam(self, out: ChangeOutputs, shown: torch.Tensor) -> torch.Tensor:
        """HiResCAM of the total change over the areas of the hands shown (``shown``: [N, 62] weights)."""
        return torch.relu(self.signed_change_cam(out, shown))

    def signed_change_cam(self, out: ChangeOutputs, shown: torch.Tensor) -> torch.Tensor:
        """:meth:`change_cam` before the ReLU: sum over channels of gradient times activation."""
        cdf = 0.5 * (1.0 + torch.erf(out.hidden / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * out.hidden * out.hidden) / math.sqrt(2.0 * math.pi)
        gelu_grad = cdf + out.hidden * pdf  # [N, 62, hidden]
        features = self.net.backbone.num_features
        # d change_a / d f_a = [raw_a > 0] sigmoid(logit_a) (gelu'(hidden_a) * w_a) @ M[:, :C]; g(0, b) has no f_a
        active = torch.sigmoid(out.logits) * (out.raw > 0).to(out.raw.dtype)
        grad = ((gelu_grad * self.area_weight) @ self.mix.weight[:, :features]) * active[..., None]
        n, channels, height, width = out.maps.shape
        projected = (grad * shown[..., None]) @ out.maps.flatten(2)  # [N, 62, h*w]
        return (out.attention * projected).sum(dim=1).reshape(n, height, width)


class PairedGraph(nn.Module):
    """Export wrapper: ``(baseline, followup) -> (change_areas, hands, change_cam)``; hands are the follow-up's
    probabilities, and the CAM covers the areas of the hands the follow-up shows (probability > 0.5)."""

    def __init__(self, net: PairedChangeNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "area_hand",
            (torch.arange(net.area_weight.shape[0]) >= net.area_weight.shape[0] // 2).long(),
            persistent=False,
        )  # fmt: skip  (grade_columns(): the left hand's areas, then the right's)

    def forward(self, baseline: torch.Tensor, followup: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(baseline, followup)
        hands = torch.sigmoid(out.hands)
        shown = (hands > 0.5).to(hands.dtype).index_select(1, self.area_hand)
        return out.areas, hands, self.net.change_cam(out, shown)


def spec_dict(spec: PairedSpec) -> dict:
    return asdict(spec)


PAIRED_FORMAT = "svdh-paired-checkpoint"
PAIRED_SPEC_NAME = "paired.json"


def save_paired(directory, net: PairedChangeNet, *, name: str, version: str, preprocessing, metrics=None,  # noqa: ANN001
                provenance=None) -> None:  # fmt: skip
    """Write the paired network's weights (safetensors) and its JSON spec, each atomically."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from svdh_runtime.bundle import sha256_file
    from svdh_runtime.files import atomic_write_text

    from .checkpoint import WEIGHTS_NAME

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (WEIGHTS_NAME + ".partial")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(partial), metadata={"format": PAIRED_FORMAT})
    partial.replace(directory / WEIGHTS_NAME)
    spec = {
        "format": PAIRED_FORMAT,
        "name": name,
        "version": version,
        "paired": net.spec.to_dict(),
        "preprocessing": asdict(preprocessing),
        "weights_sha256": sha256_file(directory / WEIGHTS_NAME),
        "metrics": dict(metrics or {}),
        "provenance": dict(provenance or {}),
    }
    atomic_write_text(directory / PAIRED_SPEC_NAME, json.dumps(spec, indent=2) + "\n")


def load_paired(directory) -> tuple[PairedChangeNet, dict]:  # noqa: ANN001
    """The paired network of a checkpoint folder (weights checked against their sha256) and its spec."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from svdh_runtime.bundle import sha256_file
    from svdh_runtime.errors import BundleError

    from .checkpoint import WEIGHTS_NAME

    directory = Path(directory)
    try:
        spec = json.loads((directory / PAIRED_SPEC_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{directory}: not a paired checkpoint (no {PAIRED_SPEC_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{directory / PAIRED_SPEC_NAME}: unreadable ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != PAIRED_FORMAT:
        raise BundleError(f"{directory}: not a svdh paired checkpoint")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file() or sha256_file(weights) != spec.get("weights_sha256"):
        raise BundleError(f"{weights}: missing or its checksum does not match; the checkpoint is damaged or altered")
    try:
        net = PairedChangeNet(PairedSpec.from_dict(spec["paired"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{directory / PAIRED_SPEC_NAME}: malformed paired spec ({exc})") from None
    net.load_state_dict(load_file(str(weights)))
    return net.eval(), spec
