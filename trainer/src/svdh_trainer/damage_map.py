"""Spatial auxiliary target: where the damage is, from per-joint grades and joint positions.

With ``[train] damage_map_weight > 0`` the linear score head, applied at every
location of the feature map, is trained to reproduce a damage density: each
damaged joint is a Gaussian of unit mass times its grade, so the density's
integral is the SvdH score. Pooling the per-location scores is exactly the
model's score, so the supervision costs no parameters; it teaches the network
to put the evidence for a joint's damage at that joint, which is what its
Grad-CAM then shows. It needs joint positions (the phantom generator's
``joints.json``); datasets without them train without it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from svdh_runtime.manifest import Preprocessing

from .datasets import Sample
from .joint_positions import canvas_placement, joint_records


def damage_points(samples: list[Sample], spec: Preprocessing) -> list[np.ndarray]:
    """Damaged joints of each sample on the model canvas: ``[K, 4]`` rows of (x, y, sigma, grade)."""
    points = []
    for record in joint_records(samples, required=True):
        where = canvas_placement(record, spec)
        damaged = [j for j in record["joints"] if j["grade"] > 0]
        points.append(
            np.array(
                [[*where.point(j["x"], j["y"]), j["radius"] * where.scale_y, j["grade"]] for j in damaged],
                dtype=np.float32,
            ).reshape(-1, 4)
        )
    return points


def render_damage(points: list[np.ndarray], spec: Preprocessing) -> torch.Tensor:
    """Damage density on the canvas ``[N, 1, H, W]``: per joint a unit-mass Gaussian times its grade."""
    maps = torch.zeros(len(points), 1, spec.height, spec.width)
    for index, joints in enumerate(points):
        for x, y, sigma, grade in joints.tolist():
            sigma = max(sigma, 1.0)
            top, bottom = max(0, int(y - 4 * sigma)), min(spec.height, int(y + 4 * sigma) + 1)
            left, right = max(0, int(x - 4 * sigma)), min(spec.width, int(x + 4 * sigma) + 1)
            if top >= bottom or left >= right:
                continue  # off the canvas
            ys = torch.arange(top, bottom, dtype=torch.float32)[:, None] + 0.5
            xs = torch.arange(left, right, dtype=torch.float32)[None, :] + 0.5
            blob = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2.0 * sigma**2))
            maps[index, 0, top:bottom, left:right] += grade * blob / blob.sum().clamp_min(1e-12)
    return maps


def local_target(
    density: torch.Tensor, totals: torch.Tensor, grid: tuple[int, int], score_mean: float, score_std: float
) -> torch.Tensor:
    """Per-location target ``[N, h, w]`` of the standardised score head, whose mean over locations is z.

    ``density`` (possibly warped by augmentation) is rescaled to integrate to
    ``totals`` (the images' scores) before it is pooled onto the feature grid.
    """
    mass = density.sum(dim=(1, 2, 3))
    density = (
        density * torch.where(mass > 0, totals / mass.clamp_min(1e-12), torch.zeros_like(mass))[:, None, None, None]
    )
    cells = F.adaptive_avg_pool2d(density, grid)[:, 0]  # mean density per cell
    area = density.shape[2] * density.shape[3]
    return cells * (area / score_std) - score_mean / score_std
