"""Does the score depend on detector resolution and field size? Fitted canvas vs physical scale.

Scores held-out phantoms with the default bundle twice: once with the canvas
fitted to each image (``mm_per_pixel = 0``, as before) and once drawn at the
bundle's physical scale. Each image is scored as acquired, with a tighter
collimation (a narrower field: 15 mm off each side and 10 mm off the top),
and as two one-hand images (its left and right halves: the RA2-DREAM layout).
Detector resolution is varied by rendering the same patients again at a
finer and a coarser pixel spacing.

    python3 reports/physical-scale/check.py data/holdout --n 80
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import default_bundle_path, load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.preprocess import prepare
from svdh_trainer.areas import AREAS
from svdh_trainer.phantom import generate as phantom


def _score(backend, pixels, spec, spacing) -> float:
    return float(backend.infer(prepare(pixels, spec, spacing_mm=spacing).canvas[None, None])["score"][0])


def _variants(pixels: np.ndarray, spacing: float) -> dict[str, tuple[np.ndarray, float]]:
    rows, columns = pixels.shape
    side, top = round(15 / spacing), round(10 / spacing)
    half = columns // 2
    return {
        "as acquired": (pixels, None),
        "narrower field": (pixels[top:, side : columns - side], None),
        "right hand alone": (pixels[:, :half], "RH"),
        "left hand alone": (pixels[:, half:], "LH"),
    }


def _rerendered(root: Path, patients: list[int], seed: int, spacing: float, out: Path) -> dict[str, Path]:
    """The same patients (same anatomy, grades, pose, dose) rendered at another pixel spacing."""
    preset = dataclasses.replace(phantom.ACQUISITION_PRESETS["default"], spacing_mm=((spacing, spacing),))
    phantom.ACQUISITION_PRESETS[f"fixed-{spacing}"] = preset
    for index in patients:
        phantom.make_patient(out, seed, index, "both", f"fixed-{spacing}")
    return {f"S{seed}-{i:05d}": out / "images" / f"S{seed}-{i:05d}.dcm" for i in patients}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("holdout", type=Path)
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--seed", type=int, default=2, help="the seed the held-out set was generated with")
    args = parser.parse_args()
    bundle = load_bundle(default_bundle_path())
    backend = create_backend("onnxruntime", bundle)
    physical = bundle.manifest.preprocessing
    fitted = dataclasses.replace(physical, mm_per_pixel=0.0)
    with (args.holdout / "labels.csv").open(newline="") as handle:
        labels = {row["Patient_ID"]: row for row in csv.DictReader(handle)}
    truth_of = {
        hand: {pid: sum(float(row[a.column(hand)]) for a in AREAS) for pid, row in labels.items()}
        for hand in ("LH", "RH")
    }
    pids = sorted(labels)[: args.n]
    errors: dict[str, dict[str, list[float]]] = {}
    shift: dict[str, dict[str, list[float]]] = {}
    as_acquired: dict[tuple[str, str], float] = {}
    for pid in pids:
        image = read_image(args.holdout / "images" / f"{pid}.dcm")
        spacing = image.meta.pixel_spacing_mm
        total = float(labels[pid]["Overall_Tol"])
        for mode, spec in (("fitted", fitted), ("physical scale", physical)):
            reference = as_acquired[pid, mode] = _score(backend, image.pixels, spec, spacing)
            for name, (pixels, hand) in _variants(image.pixels, spacing[0]).items():
                value = reference if name == "as acquired" else _score(backend, pixels, spec, spacing)
                truth = total if hand is None else truth_of[hand][pid]
                errors.setdefault(name, {}).setdefault(mode, []).append(value - truth)
                if hand is None and name != "as acquired":
                    shift.setdefault(name, {}).setdefault(mode, []).append(value - reference)
    with tempfile.TemporaryDirectory() as tmp:
        indices = [int(p.split("-")[1]) for p in pids]
        renders = {s: _rerendered(args.holdout, indices, args.seed, s, Path(tmp) / str(s)) for s in (0.15, 0.30)}
        for pid in pids:
            for s, files in renders.items():
                image = read_image(files[pid])
                for mode, spec in (("fitted", fitted), ("physical scale", physical)):
                    value = _score(backend, image.pixels, spec, image.meta.pixel_spacing_mm)
                    errors.setdefault(f"rendered at {s} mm", {}).setdefault(mode, []).append(
                        value - float(labels[pid]["Overall_Tol"])
                    )
                    shift.setdefault(f"rendered at {s} mm", {}).setdefault(mode, []).append(
                        value - as_acquired[pid, mode]
                    )
    summary = {
        name: {
            mode: {
                "n": len(v),
                "rmse": round(float(np.sqrt(np.mean(np.square(v)))), 2),
                "mean_error": round(float(np.mean(v)), 2),
                **({"mean_abs_shift": round(float(np.mean(np.abs(shift[name][mode]))), 2)} if name in shift else {}),
            }
            for mode, v in by_mode.items()
        }
        for name, by_mode in errors.items()
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
