"""Generate a phantom dataset: DICOM radiographs, ``labels.csv`` and ``joints.json``.

Each image is made from its own random stream ``(seed, index)``, so a dataset
is identical however many worker processes made it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdh_runtime.files import atomic_write_text

from ..areas import AREAS, HANDS, grade_columns
from .anatomy import Hand, Pose, add_ring, build_hand
from .dicom import write_radiograph
from .grades import PatientGrades, draw_patient
from .render import Acquisition, expose, path_lengths
from .shapes import Tube

LABEL_COLUMNS = ["Patient_ID", "Overall_Tol", "Overall_erosion", "Overall_narrowing", *grade_columns()]
LAYOUTS = ("both", "single")


@dataclass(frozen=True)
class AcquisitionRanges:
    """The ranges acquisitions are drawn from; presets below."""

    spacing_mm: tuple[tuple[float, float], ...]  # one of these intervals, uniformly
    bits: tuple[int, ...]
    monochrome1_share: float
    dose: tuple[float, float]
    blur_mm: tuple[float, float]
    heel: float
    gamma: tuple[tuple[float, float], ...]
    cr_share: float


ACQUISITION_PRESETS = {
    "default": AcquisitionRanges(
        ((0.17, 0.26),), (10, 12, 14, 16), 0.3, (900.0, 4000.0), (0.08, 0.3), 0.15, ((0.85, 1.15),), 0.4
    ),
    # Settings training never sees: finer and coarser detectors, more noise and blur,
    # other processing curves, mostly MONOCHROME1.
    "shifted": AcquisitionRanges(
        ((0.13, 0.16), (0.27, 0.31)),
        (10, 12, 16),
        0.7,
        (400.0, 900.0),
        (0.3, 0.45),
        0.25,
        ((0.7, 0.82), (1.18, 1.3)),
        0.6,
    ),
}


def _uniform_from(rng: np.random.Generator, intervals: tuple[tuple[float, float], ...]) -> float:
    lo, hi = intervals[int(rng.integers(len(intervals)))]
    return float(rng.uniform(lo, hi))


def draw_acquisition(rng: np.random.Generator, ranges: AcquisitionRanges) -> Acquisition:
    return Acquisition(
        pixel_spacing_mm=_uniform_from(rng, ranges.spacing_mm),
        bits_stored=int(rng.choice(ranges.bits)),
        photometric="MONOCHROME1" if rng.random() < ranges.monochrome1_share else "MONOCHROME2",
        dose=float(rng.uniform(*ranges.dose)),
        blur_mm=float(rng.uniform(*ranges.blur_mm)),
        heel=float(rng.uniform(-ranges.heel, ranges.heel)),
        gamma=_uniform_from(rng, ranges.gamma),
        modality="CR" if rng.random() < ranges.cr_share else "DX",
    )


def _marker(letter: str, x: float, y: float, size: float = 10.0) -> list[Tube]:
    """A lead side marker: block-letter strokes (mm, image frame)."""
    w, h = size * 0.6, size
    strokes = {
        "L": [((0, 0), (0, h)), ((0, h), (w, h))],
        "R": [
            ((0, 0), (0, h)),
            ((0, 0), (w * 0.8, 0)),
            ((w * 0.8, 0), (w, h * 0.25)),
            ((w, h * 0.25), (w * 0.8, h * 0.5)),
            ((w * 0.8, h * 0.5), (0, h * 0.5)),
            ((w * 0.3, h * 0.5), (w, h)),
        ],
    }[letter]
    return [Tube(np.array([x + a[0], y + a[1]]), np.array([x + b[0], y + b[1]]), 0.9, 8.0) for a, b in strokes]


def _pose(rng: np.random.Generator, x: float, y: float, mirror: bool) -> Pose:
    return Pose(
        offset=(x + rng.uniform(-8, 8), y + rng.uniform(-6, 6)),
        rotation_deg=float(np.clip(rng.normal(0, 6), -15, 15)),
        scale=float(rng.uniform(0.88, 1.12)),
        mirror=mirror,
    )


def _hand(patient: PatientGrades, hand: str, rng: np.random.Generator) -> Hand:
    built = build_hand(patient.by_joint(hand, "E"), patient.by_joint(hand, "J"), rng)
    if rng.random() < 0.08:
        add_ring(built, int(rng.choice((3, 4))), rng)
    return built


def _joint_records(hand_name: str, hand: Hand, patient: PatientGrades, spacing: float) -> list[dict]:
    records = []
    for area in AREAS:
        site = hand.sites[area.joint]
        column = area.column(hand_name)
        records.append(
            {
                "column": column,
                "hand": hand_name,
                "kind": area.kind,
                "x": round(float(site.centre[0] / spacing), 1),
                "y": round(float(site.centre[1] / spacing), 1),
                "radius": round(float(site.radius / spacing), 1),
                "grade": patient.grades[hand_name][column],
            }
        )
    return records


def make_patient(out: Path, seed: int, index: int, layout: str, preset: str) -> tuple[dict, dict]:
    """Render one patient's image(s); return the label row and the joint records per file."""
    rng = np.random.default_rng([seed, index])
    patient = draw_patient(rng)
    patient_id = f"S{seed}-{index:05d}"
    total, erosion, narrowing = patient.totals()
    row = {
        "Patient_ID": patient_id,
        "Overall_Tol": total,
        "Overall_erosion": erosion,
        "Overall_narrowing": narrowing,
        **patient.columns(),
    }
    # The patient's right hand is on the image's left (radiological convention), thumbs inward.
    if layout == "both":
        scenes = [("", [("RH", 78.0, False), ("LH", 242.0, True)], (320.0, 250.0))]
    else:
        scenes = [(f"-{h}", [(h, 80.0, h == "LH")], (160.0, 250.0)) for h in HANDS]
    joints = {}
    for suffix, hands, (width_mm, height_mm) in scenes:
        acq = draw_acquisition(rng, ACQUISITION_PRESETS[preset])
        spacing = acq.pixel_spacing_mm
        shape = (int(height_mm / spacing), int(width_mm / spacing))
        placed, markers, records = [], [], []
        for hand_name, x, mirror in hands:
            hand = _hand(patient, hand_name, rng).transformed(_pose(rng, x, 212.0, mirror))
            placed.append(hand)
            records += _joint_records(hand_name, hand, patient, spacing)
            markers += _marker(hand_name[0], x + (45.0 if mirror else -55.0), 12.0)
        stored = expose(path_lengths(placed, markers, shape, spacing), acq, rng)
        name = f"{patient_id}{suffix}.dcm"
        laterality = "B" if len(hands) == 2 else hands[0][0][0]
        write_radiograph(
            out / "images" / name,
            stored,
            patient_id=patient_id,
            uid_seed=f"{seed}/{index}{suffix}",
            modality=acq.modality,
            photometric=acq.photometric,
            bits_stored=acq.bits_stored,
            pixel_spacing_mm=spacing,
            laterality=laterality,
            day=index,
        )
        joints[f"images/{name}"] = {
            "pixel_spacing_mm": round(spacing, 5),
            "rows": shape[0],
            "columns": shape[1],
            "joints": records,
        }
    return row, joints


def _work(args: tuple[Path, int, int, str, str]) -> tuple[dict, dict]:
    return make_patient(*args)


def generate(
    out: Path,
    n: int,
    seed: int,
    *,
    layout: str = "both",
    preset: str = "default",
    workers: int | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> Path:
    """Write ``n`` phantom patients to ``out``; returns the path of ``labels.csv``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    if preset not in ACQUISITION_PRESETS:
        raise ValueError(f"acquisition preset must be one of {tuple(ACQUISITION_PRESETS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(out, seed, i, layout, preset) for i in range(n)]
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    if workers == 1:
        results = list(progress(map(_work, jobs)))
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(progress(pool.map(_work, jobs, chunksize=4)))
    labels = out / "labels.csv"
    with (out / "labels.csv.partial").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(row for row, _ in results)
    (out / "labels.csv.partial").replace(labels)
    joints = {name: record for _, per_file in results for name, record in per_file.items()}
    atomic_write_text(out / "joints.json", json.dumps(joints))
    meta = {"generator": "svdh-train phantom", "n": n, "seed": seed, "layout": layout, "acquisition": preset}
    (out / "phantom.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return labels
