"""How well a bundle's joint head grades and locates each area, on labelled images.

Per scored image the runtime gives each shown hand's 31 area grades and joint
positions. Against the data set's grades (``labels.csv``: for phantoms the
readers' consensus) and, where the folder has them, the exact grades
(``truth.csv``) and joint centres (``joints.json``), this module measures:

- per-area MAE (grade points) and quadratic weighted kappa (grades rounded),
  pooled over areas of the same range, and each of the 31 areas pooled over hands;
- a weighted per-area RMSE in the spirit of the RA2-DREAM challenge's joint
  subchallenges: every graded area counts with a weight inversely proportional
  to how common its true grade is among that area type's grades, so rare high
  grades count as much as the many zeros (the challenge's own weights ship in
  its scoring container and are not reproduced here);
- joint-location error in millimetres (source pixels times the pixel spacing);
- hands: how often the model sees exactly the hands the image shows.

Confidence intervals are 95 % percentile bootstraps over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdh_runtime.areas import AREAS, HANDS, grade_columns, max_grades

from .metrics import pooled_area_kappa

COLUMNS = grade_columns()
MAX_GRADES = np.array(max_grades(), float)


@dataclass
class AreaRecords:
    """Per scored image, rows of 62 columns (NaN where a hand is not shown or a value is unknown)."""

    predicted: list[np.ndarray]  # the model's expected grades
    reference: list[np.ndarray]  # the data set's grades (labels.csv)
    exact: list[np.ndarray]  # the exact grades (truth.csv), NaN rows where the folder has none
    joints_predicted: list[np.ndarray]  # [62, 2] source pixels
    joints_true: list[np.ndarray]  # [62, 2] source pixels
    spacing_mm: list[float]  # NaN where unknown
    hands_right: list[bool]  # the model saw exactly the hands the image shows

    @classmethod
    def empty(cls) -> AreaRecords:
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.predicted)


def _mae(predicted: np.ndarray, reference: np.ndarray) -> float:
    keep = np.isfinite(predicted) & np.isfinite(reference)
    return float(np.abs(predicted - reference)[keep].mean()) if keep.any() else float("nan")


def _kappa(predicted: np.ndarray, reference: np.ndarray, tops: np.ndarray = MAX_GRADES) -> float:
    return pooled_area_kappa(predicted, reference, tops)


def weighted_area_rmse(predicted: np.ndarray, reference: np.ndarray) -> float:
    """RMSE over graded areas, each weighted by 1 / (share of its rounded true grade among its kind's)."""
    keep = np.isfinite(predicted) & np.isfinite(reference)
    errors, weights = [], []
    for top in np.unique(MAX_GRADES):
        columns = (MAX_GRADES == top)[None, :] & keep
        truth = np.rint(reference[columns]).astype(int)
        if not len(truth):
            continue
        counts = np.bincount(truth, minlength=int(top) + 1).astype(float)
        weights.append(1.0 / counts[truth])
        errors.append((predicted[columns] - reference[columns]) ** 2)
    if not errors:
        return float("nan")
    error, weight = np.concatenate(errors), np.concatenate(weights)
    return float(np.sqrt(np.sum(weight * error) / np.sum(weight)))


def _location_errors_mm(records: AreaRecords, index: np.ndarray) -> np.ndarray:
    rows = []
    for i in index:
        spacing = records.spacing_mm[i]
        if not np.isfinite(spacing):
            continue
        distance = np.hypot(*(records.joints_predicted[i] - records.joints_true[i]).T) * spacing
        rows.append(distance[np.isfinite(distance)])
    return np.concatenate(rows) if rows else np.array([])


def _figures(records: AreaRecords, index: np.ndarray) -> dict[str, float]:
    predicted = np.stack([records.predicted[i] for i in index])
    reference = np.stack([records.reference[i] for i in index])
    exact = np.stack([records.exact[i] for i in index])
    figures = {
        "mae_vs_reference": _mae(predicted, reference),
        "kappa_vs_reference": _kappa(predicted, reference),
        "weighted_rmse_vs_reference": weighted_area_rmse(predicted, reference),
        "hands_accuracy": float(np.mean([records.hands_right[i] for i in index])),
    }
    if np.isfinite(exact).any():
        figures |= {
            "mae_vs_exact": _mae(predicted, exact),
            "kappa_vs_exact": _kappa(predicted, exact),
            "weighted_rmse_vs_exact": weighted_area_rmse(predicted, exact),
        }
    errors = _location_errors_mm(records, index)
    if len(errors):
        figures |= {
            "joint_error_median_mm": float(np.median(errors)),
            "joint_error_p90_mm": float(np.percentile(errors, 90)),
        }
    return figures


def area_metrics(records: AreaRecords, bootstrap: int = 1000, seed: int = 0) -> dict:
    """The figures above, with bootstrap CIs, and a per-area table."""
    if not len(records):
        return {}
    everything = np.arange(len(records))
    point = _figures(records, everything)
    result: dict = {"images": len(records), **{k: round(v, 4) for k, v in point.items()}}
    if bootstrap and len(records) > 1:
        rng = np.random.default_rng(seed)
        draws = {k: [] for k in point}
        for _ in range(bootstrap):
            for k, v in _figures(records, rng.integers(0, len(records), len(records))).items():
                draws[k].append(v)
        for k, values in draws.items():
            result[f"{k}_ci"] = [round(float(v), 4) for v in np.nanpercentile(values, [2.5, 97.5])]
        result["bootstrap"] = bootstrap
    result["per_area"] = per_area_table(records)
    return result


def per_area_table(records: AreaRecords) -> list[dict]:
    """Each of the 31 areas, both hands pooled: MAE and kappa against the reference (and exact grades), and
    the median joint-location error."""
    predicted, reference = np.stack(records.predicted), np.stack(records.reference)
    exact = np.stack(records.exact)
    rows = []
    for position, area in enumerate(AREAS):
        columns = [hand * len(AREAS) + position for hand in range(len(HANDS))]
        row = {
            "area": area.key,
            "kind": "erosion" if area.kind == "E" else "narrowing",
            "mae": round(_mae(predicted[:, columns], reference[:, columns]), 4),
            "kappa": round(_kappa(predicted[:, columns], reference[:, columns], MAX_GRADES[columns]), 4),
        }
        if np.isfinite(exact).any():
            row["mae_vs_exact"] = round(_mae(predicted[:, columns], exact[:, columns]), 4)
        distances = [
            np.hypot(*(records.joints_predicted[i][columns] - records.joints_true[i][columns]).T)
            * records.spacing_mm[i]
            for i in range(len(records))
        ]
        distances = np.concatenate(distances)
        distances = distances[np.isfinite(distances)]
        if len(distances):
            row["joint_error_median_mm"] = round(float(np.median(distances)), 3)
        rows.append(row)
    return rows
