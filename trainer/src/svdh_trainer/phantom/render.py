"""Project phantom shapes to an X-ray image and simulate the acquisition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .anatomy import Hand
from .shapes import Tube

if TYPE_CHECKING:
    from .clinic import Clinic

ATTENUATION = 0.22  # per unit of density-weighted path length


@dataclass(frozen=True)
class Acquisition:
    """How one image was exposed and stored."""

    pixel_spacing_mm: float
    bits_stored: int
    photometric: str  # MONOCHROME1 or MONOCHROME2
    dose: float  # photons per pixel in air (quantum noise)
    blur_mm: float  # detector/focal-spot blur (Gaussian sigma)
    heel: float  # exposure gradient across the image (fraction)
    gamma: float  # processing curve applied to the log signal
    modality: str  # DX or CR


def _window(bounds: tuple[float, float, float, float], spacing: float, shape: tuple[int, int]):
    x0, y0, x1, y1 = bounds
    c0, c1 = max(int(x0 / spacing), 0), min(int(np.ceil(x1 / spacing)) + 1, shape[1])
    r0, r1 = max(int(y0 / spacing), 0), min(int(np.ceil(y1 / spacing)) + 1, shape[0])
    if c0 >= c1 or r0 >= r1:
        return None
    x = (np.arange(c0, c1) + 0.5) * spacing
    y = (np.arange(r0, r1) + 0.5) * spacing
    return (slice(r0, r1), slice(c0, c1)), x[None, :], y[:, None]


def path_lengths(
    hands: list[Hand],
    markers: list[Tube],
    shape: tuple[int, int],
    spacing: float,
    texture: np.ndarray | None = None,
) -> np.ndarray:
    """Density-weighted path length per pixel: soft tissue, bone (minus erosions; times ``texture``, the
    trabecular pattern, when given), metal."""
    soft = np.zeros(shape, np.float32)
    bone = np.zeros(shape, np.float32)
    keep = np.ones(shape, np.float32)
    dense = np.zeros(shape, np.float32)
    for hand in hands:
        for tube in hand.soft:
            if (w := _window(tube.bounds(), spacing, shape)) is not None:
                region, x, y = w
                np.maximum(soft[region], tube.thickness(x, y), out=soft[region])
        for piece in hand.bones:
            if (w := _window(piece.bounds(), spacing, shape)) is not None:
                region, x, y = w
                bone[region] += piece.thickness(x, y)
        for bite in hand.bites:
            if (w := _window(bite.bounds(), spacing, shape)) is not None:
                region, x, y = w
                keep[region] *= bite.keep(x, y)
        for extra in hand.extras:
            if (w := _window(extra.bounds(), spacing, shape)) is not None:
                region, x, y = w
                dense[region] += extra.thickness(x, y)
    for stroke in markers:
        if (w := _window(stroke.bounds(), spacing, shape)) is not None:
            region, x, y = w
            dense[region] = np.maximum(dense[region], stroke.thickness(x, y))
    if texture is not None:
        keep *= texture
    return soft + bone * keep + dense


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (numpy only)."""
    if sigma_px < 0.3:
        return image
    radius = int(np.ceil(3 * sigma_px))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_px) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(taps):
            acc += w * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def expose(paths: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Attenuate, blur, add quantum noise, log-transform and quantise to stored values (version 1)."""
    return quantise(exposed_signal(paths, acq, rng), acq)


def exposed_signal(
    paths: np.ndarray,
    acq: Acquisition,
    rng: np.random.Generator,
    clinic: Clinic | None = None,
    text: tuple[str, ...] = (),
) -> np.ndarray:
    """The processed 0-1 signal, bone bright, before it is stored; with ``clinic`` (version 2), also scatter,
    the collimator, grid lines, unsharp masking, a look-up table and ``text``."""
    from . import clinic as room

    rows, cols = paths.shape
    spacing = acq.pixel_spacing_mm
    heel = 1.0 + acq.heel * (np.linspace(-0.5, 0.5, rows, dtype=np.float32)[:, None])
    intensity = np.exp(-ATTENUATION * paths) * heel
    if clinic is not None:
        intensity = room.before_detector(intensity, spacing, clinic)
    intensity = gaussian_blur(intensity.astype(np.float32), acq.blur_mm / spacing)
    if clinic is not None:
        intensity = room.grid_lines(intensity, clinic)
    counts = intensity * acq.dose
    counts = counts + np.sqrt(np.maximum(counts, 1.0)) * rng.standard_normal(counts.shape, dtype=np.float32)
    signal = -np.log(np.maximum(counts, 1.0) / (acq.dose * 1.15))  # air ~ 0.14, bone up to ~3
    signal = np.clip(signal / 3.2, 0.0, 1.0) ** acq.gamma
    if clinic is not None:
        signal = room.processing(signal, spacing, clinic)
        if clinic.text and text:
            signal = room.burn_in_text(signal, spacing, list(text), rng)
    return signal


def quantise(signal: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Stored values of a 0-1 signal (inverted for MONOCHROME1)."""
    maxval = (1 << acq.bits_stored) - 1
    stored = np.round(signal * maxval)
    if acq.photometric == "MONOCHROME1":
        stored = maxval - stored
    return stored.astype(np.uint16)
