"""A labelled data set scored through the runtime: what the model said of each image beside its labels.

Shared by ``svdh-train evaluate`` (metrics) and ``svdh-train calibrate`` (interval calibration), so both
see the same predictions the runtime gives a user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svdh_runtime.areas import HANDS, grade_columns
from svdh_runtime.scoring import Scorer, ScoreResult

from .agreement import TRUTH_NAME, grades_by_patient, sitting_key
from .area_metrics import AreaRecords
from .datasets import Sample
from .intervals import CalibrationData

SUBTOTAL_TARGETS = ("erosion", "narrowing", "LH", "RH")
COLUMNS = grade_columns()


@dataclass
class ScoredSet:
    """The scored images of a data set, and what could not be scored."""

    scored: list[tuple[Sample, ScoreResult]] = field(default_factory=list)
    failures: int = 0
    rejected: int = 0

    def truth_of(self, sample: Sample, target: str) -> float | None:
        """The data set's value of an interval target for an image (None where the image does not show it)."""
        if target == "total":
            return sample.score
        if sample.area_grades is None:
            return None
        grades = np.array(sample.area_grades, float)
        if target in HANDS:
            values = grades[[c.startswith(target) for c in COLUMNS]]
            return float(values.sum()) if np.isfinite(values).all() else None
        kind = "E" if target == "erosion" else "J"
        values = grades[[f"_{kind}__" in c for c in COLUMNS]]
        return float(np.nansum(values))

    def calibration_data(self, target: str) -> CalibrationData:
        """The target's estimate, the heads' disagreement and the truth, over the images that have all three."""
        rows = []
        for sample, result in self.scored:
            p = result.prediction
            truth = self.truth_of(sample, target)
            disagreement = p.areas.disagreement(p.score_raw) if p.areas is not None else 0.0
            if target == "total":
                estimate = p.score
            elif p.areas is None:
                continue
            else:
                estimate = p.areas.estimate(target)
            if truth is not None and estimate is not None:
                rows.append((estimate, disagreement, truth, sample.patient_id))
        if not rows:
            empty = np.array([])
            return CalibrationData(empty, empty, empty, empty)
        estimate, disagreement, truth, group = zip(*rows)
        return CalibrationData(np.array(estimate), np.array(disagreement), np.array(truth), np.array(group))

    def area_records(self, data: Path) -> AreaRecords:
        """The joint head's grades and positions beside the labels, exact grades and joint centres."""
        records = AreaRecords.empty()
        truth_file = data / TRUTH_NAME if data.is_dir() else None
        exact = grades_by_patient(truth_file) if truth_file is not None and truth_file.is_file() else {}
        sites = joint_table(data)
        for sample, result in self.scored:
            reading = result.prediction.areas
            if reading is None or sample.area_grades is None:
                continue
            reference = np.array(sample.area_grades, float)
            shown = np.isfinite(reference)
            predicted = np.array([np.nan if g is None else g for g in reading.grades.values()], float)
            joints = reading.joints_image or {}
            joints_predicted = np.array([joints.get(c, (np.nan, np.nan)) for c in COLUMNS], float)
            patient_exact = exact.get(sitting_key(sample.patient_id, sample.sitting))
            exact_row = (
                np.where(shown, [patient_exact[c] for c in COLUMNS], np.nan)
                if patient_exact
                else np.full(len(COLUMNS), np.nan)
            )
            site = sites.get(sample.path.relative_to(data).as_posix()) if data.is_dir() else None
            joints_true = np.full((len(COLUMNS), 2), np.nan)
            spacing = float("nan")
            if site is not None:
                where = {j["column"]: (j["x"], j["y"]) for j in site["joints"]}
                joints_true = np.array([where.get(c, (np.nan, np.nan)) for c in COLUMNS], float)
                spacing = float(site.get("pixel_spacing_mm") or np.nan)
            true_hands = tuple(h for h in HANDS if shown[[c.startswith(h) for c in COLUMNS]].all())
            records.predicted.append(np.where(shown, predicted, np.nan))
            records.reference.append(reference)
            records.exact.append(exact_row)
            records.joints_predicted.append(np.where(shown[:, None], joints_predicted, np.nan))
            records.joints_true.append(joints_true)
            records.spacing_mm.append(spacing)
            records.hands_right.append(tuple(reading.shown) == true_hands)
        return records


def score_samples(scorer: Scorer, samples: list[Sample], progress: Callable = lambda it: it) -> ScoredSet:
    """Score every sample; unreadable images count as failures, those the input gate turns away as rejected."""
    scored = ScoredSet()
    for sample in progress(samples):
        result = scorer.score_file(sample.path)
        if result.status == "ok":
            scored.scored.append((sample, result))
        elif result.status == "rejected":
            scored.rejected += 1
        else:
            scored.failures += 1
    return scored


def joint_table(data: Path) -> dict[str, dict]:
    path = data / "joints.json" if data.is_dir() else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
