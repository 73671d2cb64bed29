"""Targets, loss and validation figures of the joint head (``[model] joint_head = true``).

The head (:class:`svdh_exporter.model.JointHead`) grades every area of each hand
(``areas[N, 62]``, the patient's left hand then right), locates each hand's 22
joint sites and says which hands the image shows. Its targets:

- the per-area grades of ``labels.csv`` as fractions of each area's maximum, NaN
  (no loss) for a hand the image does not show;
- which hands are shown (a one-hand image's other hand is NaN in its grades);
- the joint sites on the canvas from ``joints.json`` (phantoms); a dataset
  without it trains the grades and hands only.

A horizontal flip mirrors a left hand into what looks like a right hand, so the
augmentation's flipped images get their two hands' targets swapped
(:func:`swap_hands`): "left" always means the patient's left hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from svdh_exporter.model import JointOutputs
from svdh_runtime.areas import HANDS, area_sites, max_grades
from svdh_runtime.manifest import Preprocessing

from .datasets import DatasetError, Sample
from .joint_positions import site_targets

LANDMARK_UNIT_PX = 10.0  # the landmark loss counts errors in units of 10 canvas pixels
HANDS_LOSS_WEIGHT = 0.2


@dataclass(frozen=True)
class JointTargets:
    """The joint head's targets for a set of images."""

    areas: np.ndarray  # [N, 62] grade as a fraction of the area's maximum; NaN for a hand not shown
    shown: np.ndarray  # [N, 2] 1.0 where the image shows the patient's left, right hand
    sites: np.ndarray  # [N, 44, 2] joint sites as canvas fractions (x, y); NaN where unknown

    def take(self, index: np.ndarray) -> JointTargets:
        return JointTargets(self.areas[index], self.shown[index], self.sites[index])


def joint_targets(samples: list[Sample], spec: Preprocessing) -> JointTargets:
    """The targets of ``samples`` (which need per-area grades: the RA2-DREAM columns)."""
    missing = [s.path.name for s in samples if s.area_grades is None]
    if missing:
        raise DatasetError(
            f"joint_head needs per-area grades (RA2-DREAM columns); {missing[0]} has none"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    grades = np.array([s.area_grades for s in samples], np.float32)
    fractions = grades / np.array(max_grades(), np.float32)
    shown = np.isfinite(grades.reshape(len(samples), len(HANDS), -1)).all(axis=2).astype(np.float32)
    return JointTargets(fractions, shown, site_targets(samples, spec))


def swap_hands(values: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Swap the two hands' halves of axis 1 (``[N, 2*k, ...]``) in the flipped images."""
    halves = values.reshape(values.shape[0], len(HANDS), -1, *values.shape[2:])
    swapped = halves.flip(1).reshape(values.shape)
    return torch.where(flipped.view(-1, *([1] * (values.dim() - 1))), swapped, values)


def joint_loss(
    predicted: JointOutputs,
    areas: torch.Tensor,
    shown: torch.Tensor,
    sites: torch.Tensor,
    canvas: tuple[int, int],
    landmark_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(area loss, the rest): binary cross-entropy of the grade fractions over the hands shown; of the hands
    shown; smooth L1 of the located sites (canvas pixels, over sites on the canvas)."""
    graded = torch.isfinite(areas)
    area_loss = F.binary_cross_entropy_with_logits(
        predicted.area_logits.float()[graded], areas[graded], reduction="sum"
    ) / graded.sum().clamp_min(1)
    hands_loss = F.binary_cross_entropy_with_logits(predicted.hands.float(), shown)
    rest = HANDS_LOSS_WEIGHT * hands_loss
    if landmark_weight > 0:
        located = _located_sites(predicted.joints.float())
        known = torch.isfinite(sites).all(dim=-1) & (sites >= 0).all(dim=-1) & (sites <= 1).all(dim=-1)
        if known.any():
            size = torch.tensor([canvas[1], canvas[0]], dtype=torch.float32, device=sites.device)
            error = F.smooth_l1_loss(located[known] * size, sites[known] * size, beta=2.0) / LANDMARK_UNIT_PX
            rest = rest + landmark_weight * error
    return area_loss, rest


def _first_area_of_each_site() -> list[int]:
    sites = area_sites()
    return [sites.index(site) for site in range(max(sites) + 1)]


FIRST_AREA_OF_SITE = _first_area_of_each_site()  # the joint head's positions are per area; sites share them


def _located_sites(area_joints: torch.Tensor) -> torch.Tensor:
    """The head's per-site positions ``[N, 44, 2]`` from its per-area positions ``[N, 62, 2]``."""
    return area_joints[:, FIRST_AREA_OF_SITE]


def joint_metrics(
    areas: np.ndarray, hands: np.ndarray, joints: np.ndarray, targets: JointTargets, spec: Preprocessing
) -> dict[str, float]:
    """Validation figures: per-area MAE (grade points, hands shown), hand-detection accuracy and the
    median joint-location error (mm on the canvas when its scale is known, else canvas pixels)."""
    grades = targets.areas * np.array(max_grades(), np.float32)
    graded = np.isfinite(grades)
    figures = {
        "area_mae": round(float(np.abs(areas - np.nan_to_num(grades))[graded].mean()), 4),
        "hands_accuracy": round(float(((hands > 0.5) == (targets.shown > 0.5)).mean()), 4),
    }
    located = _located_sites(torch.from_numpy(joints)).numpy()
    known = np.isfinite(targets.sites).all(axis=-1)
    if known.any():
        size = np.array([spec.width, spec.height], np.float32)
        error = np.linalg.norm((located - np.nan_to_num(targets.sites)) * size, axis=-1)[known]
        unit = spec.mm_per_pixel if spec.mm_per_pixel > 0 else 1.0
        key = "joint_error_median_mm" if spec.mm_per_pixel > 0 else "joint_error_median_px"
        figures[key] = round(float(np.median(error) * unit), 3)
    return figures
