"""The model beside the readers: who agrees with whom, on the same images.

Where a data set holds each reader's grades (``readers.csv``, a ``Reader``
column, the layout of ``labels.csv``) and, for phantoms, the exact grades
(``truth.csv``), "on par with a human reader" can be measured as the
reference work measured it: the model against a reader, beside one reader
against another. Totals are compared per image (a one-hand image by that
hand's total), with bootstrap 95 % intervals; readers' per-area grades also by
a pooled quadratic weighted kappa.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from svdh_runtime.areas import AREAS, HANDS

from .datasets import Sample, Sitting
from .metrics import icc_agreement, pearson, pooled_area_kappa, rmse
from .visits import visit_stem

READERS_NAME, TRUTH_NAME = "readers.csv", "truth.csv"


def sitting_key(patient_id: str, sitting: Sitting | None) -> str:
    """How the grade tables name a sample: its patient, or the patient's sitting in a longitudinal set."""
    return patient_id if sitting is None else visit_stem(patient_id, sitting.visit, sitting.retest)


def grades_by_patient(path: Path, key: str | None = None) -> dict[str, dict[str, float]]:
    """Grades per sitting (:func:`sitting_key`), and per ``key`` (the reader) if given."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        sitting = Sitting(int(row["Visit"]), int(row.get("Retest") or 0), 0.0) if "Visit" in row else None
        patient = sitting_key(row["Patient_ID"], sitting)
        name = patient if key is None else f"{patient}\t{row[key]}"
        table[name] = {area.column(h): float(row[area.column(h)]) for h in HANDS for area in AREAS}
    return table


def _shown(sample: Sample) -> tuple[str, ...]:
    stem = sample.path.stem
    return tuple(h for h in HANDS if stem.endswith(f"-{h}")) or HANDS


def _image_grades(grades: dict[str, float], hands: tuple[str, ...]) -> np.ndarray:
    return np.array([grades[area.column(h)] for h in hands for area in AREAS])


def _pair(name: str, left: np.ndarray, right: np.ndarray, bootstrap: int, seed: int = 0) -> dict:
    row = {
        "pair": name,
        "n": int(len(left)),
        "pcc": round(pearson(left, right), 4),
        "rmse": round(rmse(left, right), 3),
    }
    row["icc"] = round(icc_agreement(np.c_[left, right]), 4)
    if bootstrap and len(left) > 1:
        rng = np.random.default_rng(seed)
        draws = [rng.integers(0, len(left), len(left)) for _ in range(bootstrap)]
        for metric, function in (("pcc", pearson), ("rmse", rmse)):
            values = [function(left[i], right[i]) for i in draws]
            row[f"{metric}_ci"] = [round(float(v), 4) for v in np.nanpercentile(values, [2.5, 97.5])]
    return row


def agreement_table(data: Path, samples: list[Sample], predictions: list[float], bootstrap: int = 1000) -> list[dict]:
    """Rows of pairwise agreement on the scored ``samples`` (``predictions`` in the same order); empty when
    ``data`` has no ``readers.csv``."""
    data = Path(data)
    if not (data / READERS_NAME).is_file() or len(samples) < 2:
        return []
    by_reader = grades_by_patient(data / READERS_NAME, key="Reader")
    readers = sorted({name.split("\t")[1] for name in by_reader})
    truth = grades_by_patient(data / TRUTH_NAME) if (data / TRUTH_NAME).is_file() else None
    model = np.asarray(predictions, float)
    consensus = np.array([s.score for s in samples])
    totals, areas = {}, {}
    for reader in readers:
        grades = [
            _image_grades(by_reader[f"{sitting_key(s.patient_id, s.sitting)}\t{reader}"], _shown(s)) for s in samples
        ]
        totals[reader], areas[reader] = np.array([g.sum() for g in grades]), grades  # rows of 31 or 62
    rows = [_pair("model vs readers' mean", model, consensus, bootstrap)]
    rows += [_pair(f"model vs reader {r}", model, totals[r], bootstrap) for r in readers]
    tops = np.array([a.max_grade for a in AREAS] * 2)
    for i, first in enumerate(readers):
        for second in readers[i + 1 :]:
            row = _pair(f"reader {first} vs reader {second}", totals[first], totals[second], bootstrap)
            row["area_kappa"] = round(_kappa(areas[first], areas[second], samples, tops), 4)
            rows.append(row)
    rows += [_pair(f"reader {r} vs readers' mean", totals[r], consensus, bootstrap) for r in readers]
    if truth is not None:
        exact = [_image_grades(truth[sitting_key(s.patient_id, s.sitting)], _shown(s)) for s in samples]
        exact_totals = np.array([g.sum() for g in exact])
        rows.append(_pair("model vs exact grades", model, exact_totals, bootstrap))
        for r in readers:
            row = _pair(f"reader {r} vs exact grades", totals[r], exact_totals, bootstrap)
            row["area_kappa"] = round(_kappa(areas[r], exact, samples, tops), 4)
            rows.append(row)
        rows.append(_pair("readers' mean vs exact grades", consensus, exact_totals, bootstrap))
    return rows


def _kappa(left: list[np.ndarray], right: list[np.ndarray], samples: list[Sample], tops: np.ndarray) -> float:
    """Pooled per-area kappa over images of mixed layouts (one-hand images have half the areas)."""
    width = max(len(row) for row in left)
    pad = lambda rows: np.array([np.pad(r.astype(float), (0, width - len(r)), constant_values=np.nan) for r in rows])  # noqa: E731
    return pooled_area_kappa(pad(left), pad(right), tops[:width])


def agreement_markdown(rows: list[dict]) -> str:
    """The table for report.md."""
    lines = ["| pair | n | PCC (95 % CI) | RMSE (95 % CI) | ICC(2,1) | per-area κ |", "|---|---|---|---|---|---|"]
    for row in rows:
        pcc = f"{row['pcc']:.3f}" + (f" ({row['pcc_ci'][0]:.3f}–{row['pcc_ci'][1]:.3f})" if "pcc_ci" in row else "")
        error = f"{row['rmse']:.2f}" + (
            f" ({row['rmse_ci'][0]:.2f}–{row['rmse_ci'][1]:.2f})" if "rmse_ci" in row else ""
        )
        kappa = f"{row['area_kappa']:.3f}" if "area_kappa" in row else ""
        lines.append(f"| {row['pair']} | {row['n']} | {pcc} | {error} | {row['icc']:.3f} | {kappa} |")
    return "\n".join(lines) + "\n"
