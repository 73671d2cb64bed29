"""Primitive shapes of a phantom, in millimetres, and their projected thickness.

Each ``thickness`` method returns the X-ray path length (mm, weighted by
relative density) through the shape for the points ``x, y`` (2-D arrays of
mm coordinates), which :mod:`render` accumulates over small windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _chord(radius: np.ndarray | float, distance: np.ndarray) -> np.ndarray:
    """Length of a straight path at ``distance`` from the axis of a cylinder of ``radius``."""
    return 2.0 * np.sqrt(np.maximum(np.square(radius) - np.square(distance), 0.0))


@dataclass
class Bone:
    """A long bone: a cortical tube with flared, flattened-round ends.

    ``start``/``end`` are the physical tips (mm). Ends widen to ``end_radius``
    over ``flare`` mm; the cortex is thick in the shaft and thin at the ends.
    """

    start: np.ndarray
    end: np.ndarray
    shaft_radius: float
    start_radius: float
    end_radius: float
    flare: float = 6.0
    cap_flatness: float = 2.0
    cortex_density: float = 1.0
    marrow_density: float = 0.35

    @property
    def axis(self) -> np.ndarray:
        v = self.end - self.start
        return v / np.linalg.norm(v)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.end - self.start))

    def bounds(self) -> tuple[float, float, float, float]:
        r = max(self.shaft_radius, self.start_radius, self.end_radius) + 1.0
        xs, ys = (self.start[0], self.end[0]), (self.start[1], self.end[1])
        return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r

    def thickness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = self.axis
        along = (x - self.start[0]) * u[0] + (y - self.start[1]) * u[1]
        across = np.abs(-(x - self.start[0]) * u[1] + (y - self.start[1]) * u[0])
        length = self.length
        t = np.clip(along, 0.0, length)
        radius = (
            self.shaft_radius
            + (self.start_radius - self.shaft_radius) * np.exp(-t / self.flare)
            + (self.end_radius - self.shaft_radius) * np.exp(-(length - t) / self.flare)
        )
        # Flattened caps: the tip lies at the segment end; beyond the cap's
        # inset the distance grows faster, giving a rounded but broad end.
        inset_start = self.start_radius / self.cap_flatness
        inset_end = self.end_radius / self.cap_flatness
        beyond = np.maximum(inset_start - along, 0.0) + np.maximum(along - (length - inset_end), 0.0)
        distance = np.sqrt(across**2 + (self.cap_flatness * beyond) ** 2)
        end_weight = np.exp(-t / self.flare) + np.exp(-(length - t) / self.flare)
        marrow_ratio = 0.55 + 0.33 * np.clip(end_weight, 0.0, 1.0)
        outer = _chord(radius, distance)
        inner = _chord(radius * marrow_ratio, distance)
        return self.cortex_density * (outer - inner) + self.marrow_density * inner


@dataclass
class Ellipsoid:
    """A carpal bone: an ellipsoid with a cortical rim, ``axes`` as in-plane semi-axes (mm)."""

    centre: np.ndarray
    axes: tuple[float, float]
    angle: float = 0.0  # radians
    cortex_density: float = 1.0
    marrow_density: float = 0.4

    def bounds(self) -> tuple[float, float, float, float]:
        r = max(self.axes) + 1.0
        return self.centre[0] - r, self.centre[1] - r, self.centre[0] + r, self.centre[1] + r

    def _depth(self, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.centre[0], y - self.centre[1]
        a, b = self.axes[0] * scale, self.axes[1] * scale
        q = ((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2
        return 2.0 * min(a, b) * np.sqrt(np.maximum(1.0 - q, 0.0))

    def thickness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        outer, inner = self._depth(x, y, 1.0), self._depth(x, y, 0.8)
        return self.cortex_density * (outer - inner) + self.marrow_density * inner

    def boundary_point(self, theta: float, inset: float = 0.9) -> np.ndarray:
        """A point on (or just inside) the outline at parametric angle ``theta``."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        px, py = self.axes[0] * np.cos(theta) * inset, self.axes[1] * np.sin(theta) * inset
        return self.centre + np.array([px * c - py * s, px * s + py * c])


@dataclass
class Tube:
    """Soft tissue, a ring band or a marker stroke: a plain round-ended cylinder."""

    start: np.ndarray
    end: np.ndarray
    radius: float
    density: float

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.radius + 1.0
        return (
            min(self.start[0], self.end[0]) - r,
            min(self.start[1], self.end[1]) - r,
            max(self.start[0], self.end[0]) + r,
            max(self.start[1], self.end[1]) + r,
        )

    def thickness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        v = self.end - self.start
        length_sq = float(v @ v) or 1e-9
        t = np.clip(((x - self.start[0]) * v[0] + (y - self.start[1]) * v[1]) / length_sq, 0.0, 1.0)
        distance = np.hypot(x - (self.start[0] + t * v[0]), y - (self.start[1] + t * v[1]))
        return self.density * _chord(self.radius, distance)


@dataclass
class Bite:
    """An erosion: bone removed in a soft-edged disc (a fraction ``depth`` of it)."""

    centre: np.ndarray
    radius: float
    depth: float = 0.9

    def bounds(self) -> tuple[float, float, float, float]:
        r = self.radius + 1.0
        return self.centre[0] - r, self.centre[1] - r, self.centre[0] + r, self.centre[1] + r

    def keep(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of bone kept at each point (1 outside the disc)."""
        d = np.hypot(x - self.centre[0], y - self.centre[1]) / self.radius
        removed = np.clip(1.6 - 1.6 * d**2, 0.0, 1.0)  # soft edge
        return 1.0 - self.depth * removed
