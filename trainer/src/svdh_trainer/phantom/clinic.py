"""What a clinic's X-ray room and its image processing add to a radiograph (version-2 phantoms).

Before the detector: scatter (a blurred fraction of the primary beam; scatter-
to-primary ratios of 0.1-0.5 for hand radiography without a grid), the
collimator's shadow (unexposed borders, sometimes cutting a fingertip off) and
the lines of an anti-scatter grid. After it, the processing of CR and DX
systems: unsharp masking (edge enhancement with a kernel of a few
millimetres), a sigmoid look-up table in place of a plain gamma, and burned-in
text (side markers, a date, the site, an annotation line). Each image draws
its own settings from :class:`ClinicRanges`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class ClinicRanges:
    """Shares and ranges the settings of one image are drawn from."""

    scatter_to_primary: tuple[float, float] = (0.1, 0.45)
    scatter_sigma_mm: tuple[float, float] = (12.0, 30.0)
    grid_share: float = 0.35
    grid_amplitude: tuple[float, float] = (0.01, 0.035)
    unsharp_share: float = 0.75
    unsharp_sigma_mm: tuple[float, float] = (1.5, 8.0)
    unsharp_gain: tuple[float, float] = (0.3, 1.4)
    sigmoid_share: float = 0.6
    text_share: float = 0.6
    collimation_margin_mm: tuple[float, float] = (0.0, 14.0)
    black_shutter_share: float = 0.5  # processing blacks out what the collimator kept unexposed
    fingertip_cut_share: float = 0.05
    trabecular_strength: tuple[float, float] = (0.06, 0.16)
    film_share: float = 0.08  # images that are scanned films


# the unseen-acquisition sites digitise more old films
CLINIC_PRESETS = {"default": ClinicRanges(), "shifted": ClinicRanges(film_share=0.2)}


@dataclass(frozen=True)
class Clinic:
    """The settings of one image."""

    scatter_to_primary: float
    scatter_sigma_mm: float
    grid: tuple[float, float, float] | None  # (amplitude, cycles per pixel, angle 0 or 90)
    unsharp: tuple[float, float] | None  # (sigma mm, gain)
    sigmoid: tuple[float, float] | None  # (centre, slope) of the look-up table on the 0-1 signal
    collimation_mm: tuple[float, float, float, float]  # exposed field: left, top, right, bottom (mm)
    black_shutter: bool
    text: bool
    trabecular_strength: float


def draw_clinic(
    rng: np.random.Generator, ranges: ClinicRanges, field_mm: tuple[float, float], fingertips_mm: list[float]
) -> Clinic:
    """One image's settings; ``field_mm`` (width, height); ``fingertips_mm``: the y of each fingertip, for a
    collimator that cuts one off."""
    width, height = field_mm
    left, right = (float(rng.uniform(*ranges.collimation_margin_mm)) for _ in range(2))
    top, bottom = (float(rng.uniform(*ranges.collimation_margin_mm)) for _ in range(2))
    if fingertips_mm and rng.random() < ranges.fingertip_cut_share:
        top = max(top, min(fingertips_mm) + float(rng.uniform(3.0, 8.0)))  # the highest fingertip is cut off
    grid = None
    if rng.random() < ranges.grid_share:
        grid = (float(rng.uniform(*ranges.grid_amplitude)), float(rng.uniform(0.18, 0.45)), float(rng.choice([0, 90])))
    unsharp = None
    if rng.random() < ranges.unsharp_share:
        unsharp = (float(rng.uniform(*ranges.unsharp_sigma_mm)), float(rng.uniform(*ranges.unsharp_gain)))
    sigmoid = None
    if rng.random() < ranges.sigmoid_share:
        sigmoid = (float(rng.uniform(0.3, 0.45)), float(rng.uniform(4.0, 7.0)))  # soft tissue stays visible
    return Clinic(
        scatter_to_primary=float(rng.uniform(*ranges.scatter_to_primary)),
        scatter_sigma_mm=float(rng.uniform(*ranges.scatter_sigma_mm)),
        grid=grid,
        unsharp=unsharp,
        sigmoid=sigmoid,
        collimation_mm=(left, top, width - right, height - bottom),
        black_shutter=bool(rng.random() < ranges.black_shutter_share),
        text=bool(rng.random() < ranges.text_share),
        trabecular_strength=float(rng.uniform(*ranges.trabecular_strength)),
    )


def smooth_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise blurred to ``sigma_px``, unit standard deviation: drawn on a coarse grid and resized
    (cheap at any sigma)."""
    step = max(1, int(sigma_px))
    coarse = rng.standard_normal((shape[0] // step + 2, shape[1] // step + 2)).astype(np.float32)
    picture = Image.fromarray(coarse, mode="F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    field = np.asarray(picture, dtype=np.float32)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def blur_large(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A wide Gaussian blur, computed at a reduced size (scatter and unsharp kernels are many pixels wide)."""
    factor = max(1, int(sigma_px / 3))
    small_shape = (max(1, image.shape[1] // factor), max(1, image.shape[0] // factor))
    small = Image.fromarray(image.astype(np.float32), mode="F").resize(small_shape, Image.Resampling.BOX)
    from .render import gaussian_blur

    blurred = gaussian_blur(np.asarray(small, dtype=np.float32), sigma_px / factor)
    back = Image.fromarray(blurred, mode="F").resize((image.shape[1], image.shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(back, dtype=np.float32)


def trabecular_texture(
    shape: tuple[int, int], spacing_mm: float, clinic: Clinic, rng: np.random.Generator
) -> np.ndarray:
    """A multiplier of the bone's path length: trabeculae about 0.6 mm apart."""
    pattern = smooth_field(shape, max(1.0, 0.6 / spacing_mm), rng)
    return np.clip(1.0 + clinic.trabecular_strength * pattern, 0.5, 1.5).astype(np.float32)


def before_detector(intensity: np.ndarray, spacing_mm: float, clinic: Clinic) -> np.ndarray:
    """Scatter and the collimator's shadow."""
    scatter = blur_large(intensity, clinic.scatter_sigma_mm / spacing_mm) * clinic.scatter_to_primary
    return (intensity + scatter) * (0.02 + 0.98 * exposed_field(intensity.shape, spacing_mm, clinic))


def exposed_field(shape: tuple[int, int], spacing_mm: float, clinic: Clinic) -> np.ndarray:
    """1 inside the collimated field, 0 outside, with a penumbra about a millimetre wide."""
    exposed = np.zeros(shape, np.float32)
    left, top, right, bottom = (int(round(v / spacing_mm)) for v in clinic.collimation_mm)
    exposed[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = 1.0
    return np.clip(blur_large(exposed, 1.0 / spacing_mm), 0.0, 1.0)


def grid_lines(intensity: np.ndarray, clinic: Clinic) -> np.ndarray:
    if clinic.grid is None:
        return intensity
    amplitude, frequency, angle = clinic.grid
    axis = 1 if angle == 0 else 0
    positions = np.arange(intensity.shape[axis], dtype=np.float32)
    wave = 1.0 + amplitude * np.sin(2.0 * np.pi * frequency * positions)
    return intensity * (wave[None, :] if axis == 1 else wave[:, None])


def processing(signal: np.ndarray, spacing_mm: float, clinic: Clinic) -> np.ndarray:
    """Unsharp masking and the look-up table, on the 0-1 log signal (bone bright)."""
    if clinic.unsharp is not None:
        sigma, gain = clinic.unsharp
        signal = signal + gain * (signal - blur_large(signal, sigma / spacing_mm))
    signal = np.clip(signal, 0.0, 1.0)
    if clinic.sigmoid is not None:
        centre, slope = clinic.sigmoid
        low, high = (1.0 / (1.0 + np.exp(-slope * (v - centre))) for v in (0.0, 1.0))
        signal = (1.0 / (1.0 + np.exp(-slope * (signal - centre))) - low) / (high - low)
    if clinic.black_shutter:
        signal = signal * exposed_field(signal.shape, spacing_mm, clinic)
    return signal.astype(np.float32)


def burn_in_text(signal: np.ndarray, spacing_mm: float, lines: list[str], rng: np.random.Generator) -> np.ndarray:
    """Text and an annotation line written into the image, white, as a CR reader or a technologist leaves
    them (a side marker, a date, the site's name; the position varies)."""
    height, width = signal.shape
    picture = Image.fromarray(signal, mode="F")
    draw = ImageDraw.Draw(picture)
    size = max(8, int(round(float(rng.uniform(3.5, 6.0)) / spacing_mm)))
    font = ImageFont.load_default(size=size)
    corner_left = rng.random() < 0.5
    y = int(height * float(rng.uniform(0.02, 0.06)))
    for text in lines:
        x = int(width * 0.03) if corner_left else int(width * 0.97) - int(draw.textlength(text, font=font))
        draw.text((x, y), text, fill=1.0, font=font)
        y += int(size * 1.3)
    if rng.random() < 0.4:  # a measurement or pointer line
        x0, y0 = int(width * rng.uniform(0.3, 0.7)), int(height * rng.uniform(0.3, 0.7))
        length = int(float(rng.uniform(15.0, 40.0)) / spacing_mm)
        draw.line((x0, y0, x0 + length, y0 + int(length * rng.uniform(-0.5, 0.5))), fill=1.0, width=max(1, size // 8))
    return np.asarray(picture, dtype=np.float32)


@dataclass(frozen=True)
class ScannedFilm:
    """A film as a scanner gives it back: 8 bits, the film's clear edge and the scanner's dark background
    around it, a slight rotation, JPEG compression."""

    jpeg: bytes
    shape: tuple[int, int]
    offset: float  # pixels added on each side
    angle_deg: float  # counter-clockwise, about the centre

    def point(self, x: float, y: float) -> tuple[float, float]:
        """Where a point of the radiograph lies on the scan (pixels)."""
        cx, cy = self.shape[1] / 2.0, self.shape[0] / 2.0
        x, y = x + self.offset, y + self.offset
        t = np.deg2rad(self.angle_deg)
        return cx + (x - cx) * np.cos(t) + (y - cy) * np.sin(t), cy - (x - cx) * np.sin(t) + (y - cy) * np.cos(t)


def scan_film(signal: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> ScannedFilm:
    """Print ``signal`` (0-1, bone bright) on film and scan it."""
    import io

    film = np.round(np.clip(signal, 0.0, 1.0) * 255.0).astype(np.uint8)
    edge = int(round(float(rng.uniform(2.0, 6.0)) / spacing_mm))  # clear film beyond the exposed field
    background = int(round(float(rng.uniform(1.0, 4.0)) / spacing_mm))  # the scanner's lid, dark
    film = np.pad(film, edge, constant_values=int(rng.integers(225, 250)))
    film = np.pad(film, background, constant_values=int(rng.integers(5, 30)))
    angle = float(rng.uniform(-3.0, 3.0))
    picture = Image.fromarray(film).rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=int(film[0, 0]))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=int(rng.integers(70, 93)))
    return ScannedFilm(buffer.getvalue(), film.shape, float(edge + background), angle)
