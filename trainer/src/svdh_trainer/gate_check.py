"""How well a bundle's input gate separates hand radiographs from everything else.

Non-hand inputs, all available offline: every image in the DICOM files that the
pydicom wheel ships (CT, MR, US, RT, NM, PET, secondary captures…; first
frame, colour as luminance), the photographs and drawings that matplotlib
ships, and synthetic pictures (uniform and Gaussian noise, a blank film with
grain, gradients, a checkerboard, random shapes). They are fed to the model
as pixels, bypassing the DICOM reader's own refusals (modality, colour,
blank), so the gate alone is measured. Hand radiographs: phantom folders
(``svdh-train phantom``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import Bundle
from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.preprocess import prepare
from svdh_runtime.scoring import gate


@dataclass(frozen=True)
class Probe:
    """One input and its category."""

    category: str
    name: str
    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None = None  # (row, column), where the file states it


def _grey(pixels: np.ndarray) -> np.ndarray | None:
    values = np.asarray(pixels, dtype=np.float64)
    if values.ndim == 3 and values.shape[-1] in (3, 4):
        values = values[..., :3] @ np.array([0.299, 0.587, 0.114])
    elif values.ndim == 3:
        values = values[0]  # first frame
    elif values.ndim == 4:
        values = values[0, ..., :3] @ np.array([0.299, 0.587, 0.114])
    if values.ndim != 2 or min(values.shape) < 16 or not np.isfinite(values).all() or values.std() == 0:
        return None
    return values.astype(np.float32)


def pydicom_images() -> Iterator[Probe]:
    """Every decodable image in pydicom's bundled test files (no downloads)."""
    import warnings

    import pydicom

    folder = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
                pixels = ds.pixel_array if "PixelData" in ds else None
        except Exception:  # unreadable or undecodable test files are simply not probes
            continue
        grey = _grey(pixels) if pixels is not None else None
        if grey is not None:
            yield Probe(f"pydicom test file ({ds.get('Modality', '?') or '?'})", path.name, grey)


def matplotlib_images() -> Iterator[Probe]:
    """The photographs and drawings in matplotlib's sample data."""
    try:
        import matplotlib
    except ImportError:
        return
    from PIL import Image

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() in (".jpg", ".png"):
            grey = _grey(np.asarray(Image.open(path).convert("RGB")))
            if grey is not None:
                yield Probe("photograph or drawing", path.name, grey)


def synthetic_images(seed: int = 0) -> Iterator[Probe]:
    """Noise, a blank film, gradients, a checkerboard and random shapes at radiograph-like sizes."""
    rng = np.random.default_rng(seed)
    for index in range(4):
        height, width = int(rng.integers(800, 2400)), int(rng.integers(800, 2400))
        yield Probe("uniform noise", f"uniform-{index}", rng.uniform(0, 4095, (height, width)).astype(np.float32))
        yield Probe("gaussian noise", f"gaussian-{index}", rng.normal(2000, 400, (height, width)).astype(np.float32))
        film = np.full((height, width), float(rng.uniform(200, 3800)), np.float32) + rng.normal(0, 8, (height, width))
        yield Probe("blank film", f"blank-{index}", film.astype(np.float32))
        ramp = np.linspace(0, 4095, width, dtype=np.float32)[None, :] * np.ones((height, 1), np.float32)
        yield Probe("gradient", f"gradient-{index}", ramp if index % 2 else ramp.T.copy()[:height, :width])
        cell = int(rng.integers(20, 200))
        grid = ((np.arange(height)[:, None] // cell + np.arange(width)[None, :] // cell) % 2).astype(np.float32)
        yield Probe("checkerboard", f"checkerboard-{index}", grid * 3000 + 500)
        shapes = np.zeros((height, width), np.float32)
        for _ in range(12):
            top, left = int(rng.integers(0, height - 50)), int(rng.integers(0, width - 50))
            shapes[top : top + int(rng.integers(20, 400)), left : left + int(rng.integers(20, 400))] += rng.uniform(
                200, 1500
            )
        yield Probe("random shapes", f"shapes-{index}", shapes + rng.normal(0, 20, shapes.shape).astype(np.float32))


def non_hand_images() -> list[Probe]:
    return [*pydicom_images(), *matplotlib_images(), *synthetic_images()]


def hand_images(folders: list[Path]) -> Iterator[Probe]:
    """The radiographs of phantom (or any) folders, read as the runtime reads them."""
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.dcm")):
            try:
                image = read_image(path)
            except InputError:
                continue
            yield Probe(f"hand radiograph ({Path(folder).name})", path.name, image.pixels, image.meta.pixel_spacing_mm)


@dataclass(frozen=True)
class GateCheck:
    """Rejections per category."""

    counts: dict[str, tuple[int, int]]  # category -> (rejected, total)
    distances: dict[str, list[float]]

    def rate(self, hands: bool) -> tuple[int, int]:
        picked = [v for k, v in self.counts.items() if k.startswith("hand radiograph") == hands]
        return sum(r for r, _ in picked), sum(t for _, t in picked)


def check_gate(
    bundle: Bundle, probes: Iterator[Probe] | list[Probe], progress: Callable[[int], None] | None = None
) -> GateCheck:
    """Run every probe through the bundle's graph and its gate."""
    if bundle.manifest.outputs.ood_threshold <= 0:
        raise ValueError(f"{bundle.path}: the bundle has no input gate (export it with --ood-fit)")
    backend = create_backend("onnxruntime", bundle)
    spec = bundle.manifest.preprocessing
    counts: dict[str, list[int]] = {}
    distances: dict[str, list[float]] = {}
    for index, probe in enumerate(probes, 1):
        try:
            canvas = prepare(probe.pixels, spec, spacing_mm=probe.spacing_mm).canvas
        except InputError:  # prepare refuses what it cannot normalise (e.g. flat images): not scored either
            distance, rejected = float("inf"), True
        else:
            distance, reason = gate(backend.infer(canvas[None, None]), bundle.manifest)
            rejected = reason is not None
        tally = counts.setdefault(probe.category, [0, 0])
        tally[0] += int(rejected)
        tally[1] += 1
        distances.setdefault(probe.category, []).append(round(distance, 3))
        if progress is not None:
            progress(index)
    backend.close()
    return GateCheck({k: (v[0], v[1]) for k, v in counts.items()}, distances)


def gate_table(check: GateCheck, threshold: float) -> list[str]:
    """Markdown rows: category, rejected / total, median and range of the distances."""
    rows = [
        f"Input gate threshold: {threshold:.3f}",
        "",
        "| inputs | rejected | median distance | min–max |",
        "|---|---|---|---|",
    ]
    for category in sorted(check.counts, key=lambda c: (not c.startswith("hand"), c)):
        rejected, total = check.counts[category]
        values = np.array(check.distances[category], dtype=np.float64)
        finite = values[np.isfinite(values)]
        spread = f"{finite.min():.2f}–{finite.max():.2f}" if finite.size else "—"
        median = f"{np.median(finite):.2f}" if finite.size else "—"
        rows.append(f"| {category} | {rejected}/{total} | {median} | {spread} |")
    hands, others = check.rate(True), check.rate(False)
    rows += [
        "",
        f"Hand radiographs rejected: {hands[0]}/{hands[1]} ({hands[0] / max(hands[1], 1):.1%}); "
        f"non-hand inputs rejected: {others[0]}/{others[1]} ({others[0] / max(others[1], 1):.1%})",
    ]
    return rows
