"""Batch augmentation on prepared canvases (torch): pose, intensity and noise.

The variation the trainer fits models under, and that the input gate is fitted
under at export (so the gate accepts what the model was trained to handle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from svdh_runtime.manifest import Preprocessing


@dataclass(frozen=True)
class Augmented:
    """An augmented batch and what moved with it."""

    images: torch.Tensor  # [N, 1, H, W], standardised
    companion: torch.Tensor | None  # [N, C, H, W] warped like the images, when one was given
    points: torch.Tensor | None  # [N, K, 2] (x, y) as fractions of the canvas, moved like the pixels under them
    flipped: torch.Tensor  # [N] bool: mirrored left-right (the patient's hands swap sides and look swapped)


def augment_batch(
    batch: torch.Tensor,
    spec: Preprocessing,
    generator: torch.Generator,
    companion: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
) -> Augmented:
    """Random flip, rotation, scale and shift; gamma and contrast; Gaussian noise.

    ``batch`` is ``[N, 1, H, W]`` in standardised units; the result is too.
    A horizontal flip mirrors the image: a mirrored left hand looks like a right
    hand, so per-hand targets must swap (``flipped`` says which images were);
    the total score is unchanged. A ``companion`` map ``[N, C, H, W]`` (e.g. a
    damage density) gets the same geometric transform; ``points`` ``[N, K, 2]``
    (canvas fractions, NaN for unknown) are moved to where their pixels went.
    """
    n = batch.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    angle = uniform(-8.0, 8.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-0.05, 0.05)], 1),
            torch.stack([sin * flip, cos, uniform(-0.05, 0.05)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    pad = (spec.pad_value - spec.mean) / spec.std
    moved = F.grid_sample(batch - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    if companion is not None:
        companion = F.grid_sample(companion, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if points is not None:
        points = _move_points(points, theta)
    unit = (moved * spec.std + spec.mean).clamp(0.0, 1.0)
    gamma = uniform(0.8, 1.25).view(n, 1, 1, 1)
    contrast = uniform(0.9, 1.1).view(n, 1, 1, 1)
    unit = (unit.pow(gamma) * contrast).clamp(0.0, 1.0)
    noise = torch.randn(batch.shape, generator=generator) * uniform(0.0, 0.02).view(n, 1, 1, 1)
    augmented = ((unit + noise) - spec.mean) / spec.std
    return Augmented(augmented, companion, points, flip < 0)


def _move_points(points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Where points land under the warp: the sampling grid maps an output position ``o`` (normalised
    to -1..1) to the input position ``A o + t``, so an input point ``p`` lands at ``A^-1 (p - t)``."""
    normalised = points * 2.0 - 1.0
    linear, shift = theta[:, :, :2], theta[:, :, 2]
    moved = torch.linalg.solve(linear, (normalised - shift[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return (moved + 1.0) / 2.0
