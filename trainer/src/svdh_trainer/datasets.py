"""Datasets: read phantom (RA2-DREAM column layout) folders and prepare their pixels.

Pixels go through the runtime's own reader and :func:`svdh_runtime.preprocess.prepare`,
so training sees exactly what serving sees. Prepared canvases are cached on disk
next to the data, keyed by the preprocessing parameters and the file list.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import Preprocessing
from svdh_runtime.preprocess import prepare

from .areas import AREAS, HANDS

CACHE_DIR = ".svdh-cache"


class DatasetError(InputError):
    """A dataset or recipe is missing files or has malformed content (exit code 2)."""


@dataclass(frozen=True)
class Sample:
    """One image and its target: the SvdH total of the hands it shows."""

    path: Path
    patient_id: str
    score: float


def _hand_total(row: dict[str, str], hand: str, where: str) -> int:
    total = 0
    for area in AREAS:
        column = area.column(hand)
        try:
            grade = int(float(row[column]))
        except KeyError:
            raise DatasetError(f"{where}: missing column {column}") from None
        except ValueError:
            raise DatasetError(f"{where}: column {column} is not a number ({row[column]!r})") from None
        if not 0 <= grade <= area.max_grade:
            raise DatasetError(f"{where}: {column}={grade} is outside 0-{area.max_grade}")
        total += grade
    return total


IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_phantom_dir(root: Path) -> list[Sample]:
    """Samples of a folder with ``labels.csv`` (RA2-DREAM columns) and ``images/<Patient_ID>[-LH|-RH].<dcm|png|jpg>``.

    A both-hands image's target is the 0-280 total; a one-hand image's is that hand's 0-140 total.
    """
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DatasetError(f"{root}: no labels.csv")
    samples = []
    with labels.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "Patient_ID" not in reader.fieldnames:
            raise DatasetError(f"{labels}: no Patient_ID column")
        for line, row in enumerate(reader, start=2):
            where = f"{labels}:{line}"
            pid = (row.get("Patient_ID") or "").strip()
            if not pid:
                raise DatasetError(f"{where}: empty Patient_ID")
            totals = {hand: _hand_total(row, hand, where) for hand in HANDS}
            both = _find_image(root / "images", pid)
            if both is not None:
                samples.append(Sample(both, pid, float(sum(totals.values()))))
                continue
            singles = {hand: _find_image(root / "images", f"{pid}-{hand}") for hand in HANDS}
            if not any(singles.values()):
                raise DatasetError(f"{where}: no image for patient {pid} under {root / 'images'}")
            samples += [Sample(path, pid, float(totals[hand])) for hand, path in singles.items() if path is not None]
    if not samples:
        raise DatasetError(f"{labels}: no rows")
    return samples


def patient_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split by patient (both hands of a patient stay on one side)."""
    patients = sorted({s.patient_id for s in samples})
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n_val = max(1, round(len(patients) * val_fraction)) if val_fraction > 0 else 0
    val_ids = set(patients[:n_val])
    return [s for s in samples if s.patient_id not in val_ids], [s for s in samples if s.patient_id in val_ids]


def patient_folds(samples: list[Sample], folds: int, seed: int) -> list[list[Sample]]:
    """``folds`` disjoint parts by patient (both hands of a patient stay in one part), sizes within one patient."""
    patients = sorted({s.patient_id for s in samples})
    if not 2 <= folds <= len(patients):
        raise DatasetError(f"cannot make {folds} folds from {len(patients)} patients (need 2 <= folds <= patients)")
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    fold_of = {patient: index % folds for index, patient in enumerate(patients)}
    return [[s for s in samples if fold_of[s.patient_id] == k] for k in range(folds)]


def _prepare_one(args: tuple[Path, Preprocessing]) -> np.ndarray:
    path, spec = args
    return prepare(read_image(path).pixels, spec).canvas.astype(np.float16)


def load_canvases(
    samples: list[Sample],
    spec: Preprocessing,
    *,
    workers: int | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> np.ndarray:
    """Prepared canvases ``[N, H, W]`` (float16), read from or written to the cache."""
    key = hashlib.sha256(json.dumps([asdict(spec), [str(s.path.resolve()) for s in samples]]).encode()).hexdigest()[:20]
    cache = samples[0].path.parent.parent / CACHE_DIR / f"canvases-{key}.npy"
    if cache.is_file():
        return np.load(cache)
    jobs = [(s.path, spec) for s in samples]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        arrays = list(progress(map(_prepare_one, jobs)))
    else:
        with ProcessPoolExecutor(workers) as pool:
            arrays = list(progress(pool.map(_prepare_one, jobs, chunksize=8)))
    stacked = np.stack(arrays)
    try:
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_name(cache.name + ".partial.npy")
        np.save(partial, stacked)
        partial.replace(cache)
    except OSError:
        pass  # a read-only dataset is fine; we just do not cache
    return stacked
