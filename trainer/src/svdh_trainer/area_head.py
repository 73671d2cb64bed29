"""Per-area auxiliary target: the network also predicts the grade of each SvdH area.

With ``[train] area_loss_weight > 0`` an extra linear head on the pooled
features predicts, for each of the 31 areas of a hand (16 erosion, 15 joint
space narrowing), the grade summed over the hands the image shows, as a
fraction of the most it can be. Summing over hands keeps the target true under
the horizontal flip of training augmentation, which swaps the hands. The head
is trained jointly and is not exported: it shapes the shared features, and the
validation history reports its mean absolute error in grade points.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from svdh_runtime.areas import AREAS, HANDS

from .datasets import DatasetError, Sample

MAX_GRADES = np.array([area.max_grade for area in AREAS], np.float32)


def area_targets(samples: list[Sample]) -> np.ndarray:
    """``[N, 31]``: each area's grade summed over the hands shown, divided by its maximum for those hands."""
    missing = [s.path.name for s in samples if s.area_grades is None]
    if missing:
        raise DatasetError(
            f"area_loss_weight > 0 needs per-area grades (RA2-DREAM columns); {missing[0]} has none"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    grades = np.array([s.area_grades for s in samples], np.float32).reshape(len(samples), len(HANDS), len(AREAS))
    shown = np.isfinite(grades).all(axis=2).sum(axis=1)  # hands per image
    return np.nansum(grades, axis=1) / (MAX_GRADES[None, :] * np.maximum(shown, 1)[:, None])


def area_loss(predicted: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
    """Smooth L1 between predicted and true grade fractions, averaged over areas and images."""
    return F.smooth_l1_loss(predicted.float(), torch.from_numpy(targets).to(predicted.device), beta=0.1)


def area_mae(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error of per-area predictions in grade points (per hand shown)."""
    return round(float((np.abs(predicted - targets) * MAX_GRADES).mean()), 4)
