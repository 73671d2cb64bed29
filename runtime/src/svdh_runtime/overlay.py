"""Grad-CAM overlay pictures: the heatmap over the radiograph, the score written on it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .areas import AREAS
from .manifest import Manifest, Preprocessing
from .preprocess import ContentBox, fit_size, normalise_intensity, resize

if TYPE_CHECKING:
    from .scoring import ScoreResult

DISPLAY_LONG_SIDE = 1024
AREA_BY_KEY = {area.key: area for area in AREAS}
# Anchor colours of a perceptually ordered heat scale (dark purple -> yellow).
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


_LEVELS = np.linspace(0.0, 1.0, 256)
# One row per 8-bit heat level: the colour, and how opaque the heat is drawn over the radiograph.
_COLOUR_TABLE = np.stack(
    [np.interp(_LEVELS, np.linspace(0.0, 1.0, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=-1
).astype(np.uint8)


@functools.cache
def blend_table() -> np.ndarray:
    """The blended RGB of every (heat level, grey level) pair, row-major: 65536 x 3 uint8.

    The heat is drawn with opacity 0.6 * level ** 0.8 over the grey radiograph.
    """
    alpha = (0.6 * _LEVELS**0.8)[:, None, None]
    grey = np.arange(256.0)[None, :, None]
    blended = (1.0 - alpha) * grey + alpha * _COLOUR_TABLE[:, None, :].astype(np.float64)
    return np.clip(blended, 0, 255).round().astype(np.uint8).reshape(256 * 256, 3)


def heat_levels(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 quantised to 256 levels (uint8)."""
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in 0..1 to RGB uint8 with a perceptually ordered scale."""
    return _COLOUR_TABLE[heat_levels(values)]


def cam_on_content(cam: np.ndarray, spec: Preprocessing, box: ContentBox, height: int, width: int) -> np.ndarray:
    """The CAM (on the model canvas grid) cut to the image's content and resized to ``height x width``."""
    on_canvas = resize(cam, spec.height, spec.width, "bilinear")
    content = on_canvas[box.top : box.top + box.height, box.left : box.left + box.width]
    return resize(content, height, width, "bilinear")


@dataclass(frozen=True)
class JointLabel:
    """A label drawn at a joint: its graded areas, e.g. ``E2 J1`` (erosion 2, narrowing 1)."""

    x: float  # source-image pixels
    y: float
    text: str


def joint_labels(result: ScoreResult) -> list[JointLabel]:
    """One label per joint with an area graded 1 or more (the expected grade, rounded); none without a joint
    head."""
    reading = result.prediction.areas if result.prediction is not None else None
    if reading is None:
        return []
    positions = reading.joints_image or {}  # placed by Scorer.predict; none: no labels can be placed
    by_joint: dict[tuple[str, str], list[str]] = {}
    where: dict[tuple[str, str], tuple[float, float]] = {}
    for column, grade in reading.graded.items():
        shown = int(np.floor(grade + 0.5))
        if shown < 1 or column not in positions:
            continue
        hand, key = column.split("_", 1)
        area = AREA_BY_KEY[key]
        joint = (hand, area.joint)
        by_joint.setdefault(joint, []).append(f"{area.kind}{shown}")
        where.setdefault(joint, positions[column])
    return [JointLabel(*where[joint], " ".join(sorted(parts))) for joint, parts in by_joint.items()]


def render_overlay(result: ScoreResult, manifest: Manifest) -> PIL.Image.Image:  # noqa: F821
    """The radiograph (greyscale) with the normalised CAM (heat colours), the score caption and, with a joint
    head, a label at each joint with a graded area."""
    from .report import caption

    spec = manifest.preprocessing
    return compose_overlay(
        result.image.pixels,
        result.prediction.cam,
        spec,
        result.prepared.box,
        f"{caption(result, manifest)} - {manifest.name} {manifest.version}",
        joint_labels(result),
        result.image.full_shape,
    )


def compose_overlay(
    pixels: np.ndarray,
    cam: np.ndarray,
    spec: Preprocessing,
    box: ContentBox,
    text: str,
    labels: list[JointLabel] = (),
    full_shape: tuple[int, int] | None = None,
) -> PIL.Image.Image:  # noqa: F821
    """Compose the radiograph (greyscale), the normalised CAM (heat colours), a caption and joint labels
    (positioned in the ``full_shape`` image's pixels; ``pixels`` may be a reduced decode of it)."""
    from PIL import Image, ImageDraw, ImageFont

    display_spec = Preprocessing(height=DISPLAY_LONG_SIDE, width=DISPLAY_LONG_SIDE)
    height, width = fit_size(*pixels.shape, display_spec)
    grey = normalise_intensity(resize(pixels, height, width, "bilinear"), spec)
    heat = cam_on_content(cam, spec, box, height, width)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    pairs = heat_levels(heat).astype(np.intp) * 256 + heat_levels(grey)
    picture = Image.fromarray(np.take(blend_table(), pairs, axis=0), mode="RGB")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(14, width // 45))
    left, top, right, bottom = draw.textbbox((10, 10), text, font=font)
    draw.rectangle((left - 6, top - 6, right + 6, bottom + 6), fill=(0, 0, 0))
    draw.text((10, 10), text, fill=(255, 255, 255), font=font)
    rows, columns = full_shape or pixels.shape
    small = ImageFont.load_default(size=max(10, width // 80))
    radius = max(3, width // 200)
    for label in labels:
        x, y = label.x * width / columns, label.y * height / rows
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(0, 255, 255), width=2)
        left, top, right, bottom = draw.textbbox((x + radius + 2, y - radius), label.text, font=small)
        draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
        draw.text((x + radius + 2, y - radius), label.text, fill=(0, 255, 255), font=small)
    return picture


def write_overlay(picture: PIL.Image.Image, path: Path) -> None:  # noqa: F821
    """Write atomically, so an interrupted run never leaves a half-written PNG."""
    from .files import atomic_target

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as partial:
        picture.save(partial, format="PNG", compress_level=1)  # level 6 costs ~0.2 s more per image
