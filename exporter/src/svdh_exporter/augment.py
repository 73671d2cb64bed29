"""Batch augmentation on prepared canvases (torch): pose, intensity and noise.

The variation the trainer fits models under, and that the input gate is fitted
under at export (so the gate accepts what the model was trained to handle).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from svdh_runtime.manifest import Preprocessing


def augment_batch(
    batch: torch.Tensor, spec: Preprocessing, generator: torch.Generator, companion: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Random flip, rotation, scale and shift; gamma and contrast; Gaussian noise.

    ``batch`` is ``[N, 1, H, W]`` in standardised units; the result is too.
    A horizontal flip swaps the hands, which leaves the total score unchanged.
    A ``companion`` map ``[N, C, H, W]`` (e.g. a damage density) gets the same
    geometric transform and is returned too.
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
    unit = (moved * spec.std + spec.mean).clamp(0.0, 1.0)
    gamma = uniform(0.8, 1.25).view(n, 1, 1, 1)
    contrast = uniform(0.9, 1.1).view(n, 1, 1, 1)
    unit = (unit.pow(gamma) * contrast).clamp(0.0, 1.0)
    noise = torch.randn(batch.shape, generator=generator) * uniform(0.0, 0.02).view(n, 1, 1, 1)
    augmented = ((unit + noise) - spec.mean) / spec.std
    return augmented if companion is None else (augmented, companion)
