"""The one preprocessing of svdh: training and serving both call :func:`prepare`.

Input is a 2-D float image in which bone is bright (MONOCHROME2 sense); the
readers in :mod:`svdh_runtime.imageio` produce that. Output is the model's
standardised ``H x W`` canvas and where the image lies on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .manifest import Preprocessing

_MIN_SIDE = 16


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


def fit_size(height: int, width: int, spec: Preprocessing) -> tuple[int, int]:
    """Size of an image of ``height x width`` scaled to fit the canvas, aspect kept."""
    scale = min(spec.height / height, spec.width / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Antialiased resize of a float image with Pillow (float32 in, float32 out)."""
    from PIL import Image

    filters = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "box": Image.Resampling.BOX,
    }
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((width, height), filters[method]), dtype=np.float32)


def normalise_intensity(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Map the content's low/high percentiles to 0/1 and clip."""
    low, high = np.percentile(image, [spec.low_percentile, spec.high_percentile])
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-6 * max(1.0, abs(high)):
        raise InputError("image has no contrast (it is blank or constant)")
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def prepare(image: np.ndarray, spec: Preprocessing) -> Prepared:
    """Turn a bone-bright 2-D image into the standardised model canvas."""
    if image.ndim != 2:
        raise InputError(f"expected a 2-D greyscale image, found shape {image.shape}")
    if min(image.shape) < _MIN_SIDE:
        raise InputError(f"image is too small ({image.shape[1]}x{image.shape[0]} pixels)")
    if not np.all(np.isfinite(image)):
        raise InputError("image holds non-finite pixel values")
    height, width = fit_size(*image.shape, spec)
    small = normalise_intensity(resize(image, height, width, spec.resample), spec)
    canvas = np.full((spec.height, spec.width), spec.pad_value, dtype=np.float32)
    top, left = (spec.height - height) // 2, (spec.width - width) // 2
    canvas[top : top + height, left : left + width] = small
    canvas -= np.float32(spec.mean)
    canvas /= np.float32(spec.std)
    return Prepared(canvas=canvas, box=ContentBox(top, left, height, width))


def canvas_to_image(x: float, y: float, box: ContentBox, image_shape: tuple[int, int]) -> tuple[float, float]:
    """Map a point on the model canvas (pixels) back to the original image (pixels)."""
    rows, columns = image_shape
    return (x - box.left) * columns / box.width, (y - box.top) * rows / box.height


def cam_peak(
    cam: np.ndarray, spec: Preprocessing, box: ContentBox, image_shape: tuple[int, int]
) -> tuple[float, float]:
    """Where a CAM is highest on the radiograph, in image pixels (x, y).

    The CAM is upsampled to the canvas as the overlay shows it; only the part of
    the canvas that holds the radiograph counts (not the letterbox padding).
    """
    on_canvas = resize(cam, spec.height, spec.width, "bilinear")
    content = on_canvas[box.top : box.top + box.height, box.left : box.left + box.width]
    row, col = np.unravel_index(int(np.argmax(content)), content.shape)
    return canvas_to_image(box.left + col + 0.5, box.top + row + 0.5, box, image_shape)
