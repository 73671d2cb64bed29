"""Datasets: RA2-DREAM-layout folders (phantoms too), plain CSV manifests, RSNA bone age; prepared pixels.

Pixels go through the runtime's own reader and :func:`svdh_runtime.preprocess.prepare_loaded`,
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

from svdh_runtime.areas import AREAS, HANDS
from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import Preprocessing
from svdh_runtime.preprocess import prepare_loaded

from .visits import visit_stem

CACHE_DIR = ".svdh-cache"


class DatasetError(InputError):
    """A dataset or recipe is missing files or has malformed content (exit code 2)."""


@dataclass(frozen=True)
class Sample:
    """One image and its target: the SvdH total of the hands it shows."""

    path: Path
    patient_id: str
    score: float
    # Per-area grades in grade_columns() order (both hands), NaN for a hand the image does not show;
    # None where the dataset has no per-area grades.
    area_grades: tuple[float, ...] | None = None
    sitting: Sitting | None = None  # which visit of a longitudinal data set


@dataclass(frozen=True)
class Sitting:
    """When a longitudinal data set's image was taken: the visit, which acquisition of it, years from baseline."""

    visit: int
    retest: int
    years: float


def _hand_grades(row: dict[str, str], hand: str, where: str) -> list[float]:
    """The hand's per-area grades (AREAS order), checked against each area's range; a readers' mean may be
    fractional (1.5)."""
    grades = []
    for area in AREAS:
        column = area.column(hand)
        try:
            grade = float(row[column])
        except KeyError:
            raise DatasetError(f"{where}: missing column {column}") from None
        except ValueError:
            raise DatasetError(f"{where}: column {column} is not a number ({row[column]!r})") from None
        if not 0 <= grade <= area.max_grade:  # also false for NaN
            raise DatasetError(f"{where}: {column}={grade:g} is outside 0-{area.max_grade}")
        grades.append(grade)
    return grades


def _area_grades(grades: dict[str, list[float]], shown: tuple[str, ...]) -> tuple[float, ...]:
    """Both hands' grades in grade_columns() order; NaN for a hand not shown."""
    return tuple(float(g) if hand in shown else float("nan") for hand in HANDS for g in grades[hand])


IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _sitting(row: dict[str, str], where: str) -> Sitting:
    try:
        visit, retest = int(row["Visit"]), int(row.get("Retest") or 0)
        years = float(row.get("Years_From_Baseline") or "nan")
    except ValueError:
        raise DatasetError(f"{where}: Visit, Retest and Years_From_Baseline must be numbers") from None
    if visit < 1 or retest < 0 or not years >= 0:
        raise DatasetError(f"{where}: Visit must be 1 or more, Retest 0 or more, Years_From_Baseline 0 or more")
    return Sitting(visit, retest, years)


def read_phantom_dir(root: Path) -> list[Sample]:
    """Samples of a folder with ``labels.csv`` (RA2-DREAM columns) and ``images/<Patient_ID>[-LH|-RH].<dcm|png|jpg>``.
    A longitudinal folder's ``labels.csv`` has ``Visit``, ``Retest`` and ``Years_From_Baseline`` and a row per
    sitting, whose images are ``<Patient_ID>-V<visit>[-R<retest>][-LH|-RH]``.

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
        longitudinal = "Visit" in reader.fieldnames
        for line, row in enumerate(reader, start=2):
            where = f"{labels}:{line}"
            pid = (row.get("Patient_ID") or "").strip()
            if not pid:
                raise DatasetError(f"{where}: empty Patient_ID")
            grades = {hand: _hand_grades(row, hand, where) for hand in HANDS}
            sitting = _sitting(row, where) if longitudinal else None
            stem = pid if sitting is None else visit_stem(pid, sitting.visit, sitting.retest)
            both = _find_image(root / "images", stem)
            if both is not None:
                total = sum(sum(g) for g in grades.values())
                samples.append(Sample(both, pid, float(total), _area_grades(grades, HANDS), sitting))
                continue
            singles = {hand: _find_image(root / "images", f"{stem}-{hand}") for hand in HANDS}
            if not any(singles.values()):
                raise DatasetError(f"{where}: no image for patient {pid} ({stem}[-LH|-RH]) under {root / 'images'}")
            samples += [
                Sample(path, pid, float(sum(grades[hand])), _area_grades(grades, (hand,)), sitting)
                for hand, path in singles.items()
                if path is not None
            ]
    if not samples:
        raise DatasetError(f"{labels}: no rows")
    return samples


DATASET_FORMATS = ("auto", "ra2", "manifest", "bone_age")
BONE_AGE_COLUMNS = ("id", "boneage", "male")


def read_dataset(location: Path, format: str = "auto") -> list[Sample]:
    """Samples of any supported layout.

    - ``ra2``: a folder with ``labels.csv`` in RA2-DREAM columns and ``images/`` (phantoms,
      RA2-DREAM, DICOM folders laid out that way); target: the hands-and-wrists SvdH total.
    - ``manifest``: a CSV file with ``path,score`` (and optionally ``patient_id``); paths
      relative to the CSV; any image the runtime reads (DICOM, PNG, JPEG).
    - ``bone_age``: the RSNA bone-age layout, a CSV with ``id,boneage,male`` and
      ``<id>.png`` beside it, in ``<csv stem>/`` or in ``images/``; target: bone age in months
      (for pretraining).
    - ``auto``: decided from the path and the CSV header.
    """
    location = Path(location)
    if format not in DATASET_FORMATS:
        raise DatasetError(f"unknown dataset format {format!r} (choose from {', '.join(DATASET_FORMATS)})")
    if format == "auto":
        format = _detect_format(location)
    if format == "ra2":
        return read_phantom_dir(location)
    if format == "manifest":
        return read_manifest_csv(location)
    return read_bone_age(location)


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [c.strip() for c in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable CSV ({exc})") from None


def _detect_format(location: Path) -> str:
    if location.is_dir():
        if (location / "labels.csv").is_file():
            return "ra2"
        for candidate in sorted(location.glob("*.csv")):
            if set(BONE_AGE_COLUMNS) <= set(_csv_header(candidate)):
                return "bone_age"
        raise DatasetError(f"{location}: no labels.csv (RA2-DREAM layout) and no bone-age CSV (id,boneage,male)")
    if not location.is_file():
        raise DatasetError(f"{location}: no such dataset file or folder")
    header = set(_csv_header(location))
    if set(BONE_AGE_COLUMNS) <= header:
        return "bone_age"
    if {"path", "score"} <= header:
        return "manifest"
    raise DatasetError(f"{location}: CSV has neither path,score (manifest) nor id,boneage,male (bone age) columns")


def _number(row: dict[str, str], column: str, where: str) -> float:
    value = (row.get(column) or "").strip()
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{where}: column {column} is not a number ({value!r})") from None
    if not np.isfinite(number):
        raise DatasetError(f"{where}: column {column} is not a finite number ({value!r})")
    return number


def _patient_of(path: Path) -> str:
    """Patient of an image named ``<patient>[-LH|-RH].<ext>``."""
    stem = path.stem
    for hand in HANDS:
        stem = stem.removesuffix(f"-{hand}")
    return stem


def read_manifest_csv(path: Path) -> list[Sample]:
    """A plain CSV ``path,score[,patient_id]`` (extra columns, such as per-joint grades, are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such manifest file")
    samples = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "score"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need path,score)")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            image = path.parent / (row.get("path") or "").strip()
            if not (row.get("path") or "").strip() or not image.is_file():
                raise DatasetError(f"{where}: image {row.get('path')!r} not found")
            score = _number(row, "score", where)
            if not 0 <= score <= 280:
                raise DatasetError(f"{where}: score {score:g} is outside 0-280")
            patient = (row.get("patient_id") or "").strip() or _patient_of(image)
            samples.append(Sample(image, patient, score))
    if not samples:
        raise DatasetError(f"{path}: no rows")
    return samples


def read_bone_age(location: Path) -> list[Sample]:
    """The RSNA pediatric bone-age layout: ``id,boneage,male`` and ``<id>.png`` images; target in months."""
    location = Path(location)
    if location.is_dir():
        found = [c for c in sorted(location.glob("*.csv")) if set(BONE_AGE_COLUMNS) <= set(_csv_header(c))]
        if not found:
            raise DatasetError(f"{location}: no CSV with columns id,boneage,male")
        location = found[0]
    folders = [location.parent / location.stem, location.parent / "images", location.parent]
    samples = []
    with location.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(BONE_AGE_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{location}: missing column(s) {', '.join(sorted(missing))} (need id,boneage,male)")
        for line, row in enumerate(reader, start=2):
            where = f"{location}:{line}"
            image_id = (row.get("id") or "").strip()
            if not image_id:
                raise DatasetError(f"{where}: empty id")
            months = _number(row, "boneage", where)
            if not 0 <= months <= 240:
                raise DatasetError(f"{where}: boneage {months:g} months is outside 0-240")
            if (row.get("male") or "").strip().lower() not in ("true", "false", "1", "0"):
                raise DatasetError(f"{where}: male must be True or False, found {row.get('male')!r}")
            image = next((f / f"{image_id}.png" for f in folders if (f / f"{image_id}.png").is_file()), None)
            if image is None:
                raise DatasetError(f"{where}: no {image_id}.png in {', '.join(str(f) for f in folders)}")
            samples.append(Sample(image, image_id, months))
    if not samples:
        raise DatasetError(f"{location}: no rows")
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
    return prepare_loaded(read_image(path), spec).canvas.astype(np.float16)


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
