"""The one preprocessing of svdh: training and serving both call :func:`prepare`.

Input is a 2-D float image in which bone is bright (MONOCHROME2 sense); the
readers in :mod:`svdh_runtime.imageio` produce that. Output is the model's
standardised ``H x W`` canvas and where the image lies on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .manifest import Preprocessing

if TYPE_CHECKING:
    from .imageio import LoadedImage

_MIN_SIDE = 16
# Pixel spacings outside this range (mm) are not believed: no radiographic
# detector or film digitiser has them, so the header is wrong and the image is
# fitted to the canvas instead of being drawn at an absurd size.
PLAUSIBLE_SPACING_MM = (0.02, 2.0)
MIN_EXTENT_MM = 50.0  # a radiograph whose longer side is shorter than this cannot show a hand


@dataclass(frozen=True)
class ContentBox:
    """Where the resized radiograph lies on the model canvas (pixels)."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Prepared:
    """A model-ready canvas and its geometry."""

    canvas: np.ndarray  # float32 [H, W], standardised
    box: ContentBox
    mm_per_pixel: float | None = None  # the canvas scale the image was drawn at; None: fitted, scale unknown


def fit_size(height: int, width: int, spec: Preprocessing) -> tuple[int, int]:
    """Size of an image of ``height x width`` scaled to fit the canvas, aspect kept."""
    scale = min(spec.height / height, spec.width / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def plausible_spacing(spacing_mm: tuple[float, float] | None) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm if it is one a radiograph can have, else None."""
    if spacing_mm is None:
        return None
    low, high = PLAUSIBLE_SPACING_MM
    if all(np.isfinite(s) and low <= s <= high for s in spacing_mm):
        return float(spacing_mm[0]), float(spacing_mm[1])
    return None


def placement(
    full_shape: tuple[int, int], spec: Preprocessing, spacing_mm: tuple[float, float] | None = None
) -> tuple[int, int, float | None]:
    """Height and width (canvas pixels) the image is drawn at, and the canvas scale in mm per pixel.

    With ``spec.mm_per_pixel`` and a plausible ``(row, column)`` spacing, the
    image keeps its physical size (and anisotropic pixels become square),
    shrunk only if it would not fit; otherwise it is fitted to the canvas and
    the scale is None (unknown).
    """
    rows, columns = full_shape
    spacing = plausible_spacing(spacing_mm) if spec.mm_per_pixel > 0 else None
    if spacing is None:
        height, width = fit_size(rows, columns, spec)
        return height, width, None
    height_mm, width_mm = rows * spacing[0], columns * spacing[1]
    if max(height_mm, width_mm) < MIN_EXTENT_MM:
        raise InputError(
            f"image spans only {width_mm:.0f} x {height_mm:.0f} mm (pixel spacing {spacing[1]:g} x {spacing[0]:g} mm): "
            "too small to show a hand"
        )
    scale_mm = max(spec.mm_per_pixel, height_mm / spec.height, width_mm / spec.width)
    height = int(np.clip(round(height_mm / scale_mm), 1, spec.height))
    width = int(np.clip(round(width_mm / scale_mm), 1, spec.width))
    return height, width, float(scale_mm)


def resize(
    image: np.ndarray,
    height: int,
    width: int,
    method: str = "bilinear",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Antialiased resize of a float image (or of its ``box`` region) with Pillow (float32 in, float32 out)."""
    from PIL import Image

    filters = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "box": Image.Resampling.BOX,
    }
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((width, height), filters[method], box=box), dtype=np.float32)


def percentiles(values: np.ndarray, percents: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(values, percents)`` (method "linear"), the same numbers to the last bit, without the
    import of ``numpy.ma`` that ``np.percentile`` makes on its first call (~40 ms of every cold start). NaN
    anywhere gives NaN, as there."""
    flat = np.asarray(values).reshape(-1)
    count = flat.size
    fractions = np.asarray(percents, dtype=np.float64) / 100
    virtual = (count - 1) * fractions  # numpy's virtual index of the linear method
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= count - 1
    previous[above], following[above] = -1, -1
    previous[virtual < 0], following[virtual < 0] = 0, 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    kth = sorted({index % count for index in (0, -1, *previous.tolist(), *following.tolist())})
    ordered = np.partition(flat, kth)
    if np.issubdtype(ordered.dtype, np.inexact) and np.isnan(ordered[-1]):
        return np.full(len(fractions), np.nan)
    low, high = ordered[previous], ordered[following]
    gamma = virtual - previous
    difference = high - low
    result = np.add(low, difference * gamma)
    np.subtract(high, difference * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe")
    return result


def normalise_intensity(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Map the content's low/high percentiles to 0/1 and clip."""
    low, high = percentiles(image, (spec.low_percentile, spec.high_percentile))
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-6 * max(1.0, abs(high)):
        raise InputError("image has no contrast (it is blank or constant)")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _reduced_region(image: np.ndarray, full_shape: tuple[int, int], reduction: int) -> tuple[np.ndarray, tuple]:
    """The image padded by one edge pixel, and the region of it that covers the full-resolution image.

    Sample k of a JPEG 2000 level-r band sits at full-resolution position 2^r k,
    so the full image's extent [0, W) is [0.5 - 0.5 / 2^r, W / 2^r + 0.5 - 0.5 / 2^r)
    in band pixels (shifted by one for the padding).
    """
    scale = 2.0**reduction
    offset = 1.0 + 0.5 * (1.0 - 1.0 / scale)
    rows, columns = full_shape
    padded = np.pad(image, 1, mode="edge")
    return padded, (offset, offset, offset + columns / scale, offset + rows / scale)


def prepare_loaded(image: LoadedImage, spec: Preprocessing) -> Prepared:
    """:func:`prepare` of what :func:`svdh_runtime.imageio.read_image` returned (training and serving both use it)."""
    return prepare(image.pixels, spec, image.reduction, image.full_shape, image.meta.pixel_spacing_mm)


def prepare(
    image: np.ndarray,
    spec: Preprocessing,
    reduction: int = 0,
    full_shape: tuple[int, int] | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Prepared:
    """Turn a bone-bright 2-D image into the standardised model canvas.

    ``reduction``: the image is a JPEG 2000 resolution level, 1/2^reduction of
    ``full_shape`` (see :mod:`svdh_runtime.jpeg2000`); the canvas is then the
    one the full image would give, up to the band's filtering. ``spacing_mm``:
    the full image's (row, column) pixel spacing, used when the bundle's canvas
    has a physical scale (see :func:`placement`).
    """
    if image.ndim != 2:
        raise InputError(f"expected a 2-D greyscale image, found shape {image.shape}")
    if min(image.shape) < _MIN_SIDE:
        raise InputError(f"image is too small ({image.shape[1]}x{image.shape[0]} pixels)")
    if not np.all(np.isfinite(image)):
        raise InputError("image holds non-finite pixel values")
    if reduction:
        full_shape = full_shape or (image.shape[0] * 2**reduction, image.shape[1] * 2**reduction)
        height, width, scale_mm = placement(full_shape, spec, spacing_mm)
        padded, region = _reduced_region(image, full_shape, reduction)
        small = normalise_intensity(resize(padded, height, width, spec.resample, box=region), spec)
    else:
        height, width, scale_mm = placement(image.shape, spec, spacing_mm)
        small = normalise_intensity(resize(image, height, width, spec.resample), spec)
    canvas = np.full((spec.height, spec.width), spec.pad_value, dtype=np.float32)
    top, left = (spec.height - height) // 2, (spec.width - width) // 2
    canvas[top : top + height, left : left + width] = small
    canvas -= np.float32(spec.mean)
    canvas /= np.float32(spec.std)
    return Prepared(canvas=canvas, box=ContentBox(top, left, height, width), mm_per_pixel=scale_mm)


def canvas_to_image(x: float, y: float, box: ContentBox, image_shape: tuple[int, int]) -> tuple[float, float]:
    """Map a point on the model canvas (pixels) back to the original image (pixels)."""
    rows, columns = image_shape
    return (x - box.left) * columns / box.width, (y - box.top) * rows / box.height


def cam_peak(
    cam: np.ndarray, spec: Preprocessing, box: ContentBox, image_shape: tuple[int, int]
) -> tuple[float, float]:
    """Where a CAM is highest on the radiograph, in image pixels (x, y).

    Only cells whose centre lies on the radiograph count (not the letterbox
    padding). The peak cell is refined to sub-cell precision by a parabola
    through it and its neighbours along each axis (the usual sub-pixel peak
    estimate), so a coarse CAM grid does not snap the peak to cell centres.
    """
    rows, columns = cam.shape
    cell_h, cell_w = spec.height / rows, spec.width / columns
    centre_y = (np.arange(rows) + 0.5) * cell_h
    centre_x = (np.arange(columns) + 0.5) * cell_w
    inside_y = (centre_y >= box.top) & (centre_y < box.top + box.height)
    inside_x = (centre_x >= box.left) & (centre_x < box.left + box.width)
    masked = np.where(inside_y[:, None] & inside_x[None, :], cam, -np.inf)
    if not np.isfinite(masked).any():  # content smaller than one cell
        masked = cam
    row, col = np.unravel_index(int(np.argmax(masked)), cam.shape)
    y = (row + 0.5 + _parabolic_offset(masked[max(row - 1, 0) : row + 2, col], row > 0)) * cell_h
    x = (col + 0.5 + _parabolic_offset(masked[row, max(col - 1, 0) : col + 2], col > 0)) * cell_w
    x = float(np.clip(x, box.left, box.left + box.width - 1e-3))
    y = float(np.clip(y, box.top, box.top + box.height - 1e-3))
    return canvas_to_image(x, y, box, image_shape)


def _parabolic_offset(values: np.ndarray, has_before: bool) -> float:
    """Offset in (-0.5, 0.5) of a parabola's vertex through three samples around a maximum (0 at an edge)."""
    if len(values) != 3 or not has_before or not np.all(np.isfinite(values)):
        return 0.0
    before, peak, after = (float(v) for v in values)
    curvature = before - 2.0 * peak + after
    if curvature >= 0.0:
        return 0.0
    return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))
