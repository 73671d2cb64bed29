"""Fit the conformal intervals of a bundle (see :mod:`svdh_runtime.intervals`) on held-out labelled images.

The calibration images are split in two by patient: the first half fits the
difficulty model (a non-negative least-squares line of the absolute error on
``[1, estimate, disagreement]``), the second gives the normalised residuals whose
conformal quantile sets the interval's half-width. Splitting keeps the quantile
honest: the difficulty model never saw the residuals it is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdh_runtime.manifest import DEFAULT_INTERVAL_LEVEL, IntervalCalibration

MIN_IMAGES = 40  # 20 in each half
BASE_FLOOR = 0.05  # the smallest difficulty at a zero estimate, as a fraction of the mean absolute error


class CalibrationError(ValueError):
    """Too few or unsuitable calibration images."""


@dataclass(frozen=True)
class CalibrationData:
    """One target on the calibration images: the model's estimate, the heads' disagreement, the truth."""

    estimate: np.ndarray
    disagreement: np.ndarray
    truth: np.ndarray
    group: np.ndarray  # patient of each image (halves never split a patient)


def fit_interval(
    target: str, data: CalibrationData, seed: int = 0, level: float = DEFAULT_INTERVAL_LEVEL
) -> IntervalCalibration:
    """The calibration of ``target``'s intervals from ``data``."""
    if len(data.truth) < MIN_IMAGES:
        raise CalibrationError(f"{target}: {len(data.truth)} calibration images; at least {MIN_IMAGES} are needed")
    first = first_half(data.group, seed)
    base, per_point, per_disagreement = _difficulty_fit(
        data.estimate[first], data.disagreement[first], data.truth[first]
    )
    second = ~first
    difficulty = (
        base + per_point * np.maximum(data.estimate[second], 0) + per_disagreement * np.abs(data.disagreement[second])
    )
    scores = np.sort(np.abs(data.truth[second] - data.estimate[second]) / difficulty)
    return IntervalCalibration(
        target=target,
        base=round(float(base), 6),
        per_point=round(float(per_point), 6),
        per_disagreement=round(float(per_disagreement), 6),
        scores=tuple(round(float(s), 5) for s in scores),
        level=level,
    )


def first_half(group: np.ndarray, seed: int) -> np.ndarray:
    """Which rows belong to the first half of the patients (``group``: each row's patient), drawn with
    ``seed``: the halves never split a patient."""
    patients = np.unique(group)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    return np.isin(group, patients[: len(patients) // 2])


def _difficulty_fit(estimate: np.ndarray, disagreement: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Non-negative least squares of |truth - estimate| on [1, max(estimate, 0), |disagreement|]."""
    error = np.abs(truth - estimate).astype(np.float64)
    design = np.stack([np.ones_like(estimate), np.maximum(estimate, 0), np.abs(disagreement)], axis=1)
    coefficients = non_negative_least_squares(design.astype(np.float64), error)
    floor = BASE_FLOOR * max(float(error.mean()), 1e-3)
    return max(float(coefficients[0]), floor), float(coefficients[1]), float(coefficients[2])


def coverage(
    calibration: IntervalCalibration, data: CalibrationData, level: float, bounds: tuple[float, float]
) -> dict:
    """Coverage and mean width of the intervals on ``data`` (another set than the calibration's); ``inside``
    says of each image whether its interval held the truth."""
    from svdh_runtime.intervals import interval

    inside, widths = [], []
    for estimate, disagreement, truth in zip(data.estimate, data.disagreement, data.truth):
        got = interval(calibration, float(estimate), float(disagreement), level, bounds)
        inside.append(got.low <= truth <= got.high)
        widths.append(got.high - got.low)
    return {
        "level": level,
        "n": len(inside),
        "coverage": round(float(np.mean(inside)), 4),
        "mean_width": round(float(np.mean(widths)), 3),
        "inside": inside,
    }


def non_negative_least_squares(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin |design @ c - target| subject to c >= 0, for a few columns: the best of the unconstrained
    least-squares fits on every subset of the columns whose coefficients are all non-negative."""
    import itertools

    columns = design.shape[1]
    best, best_error = np.zeros(columns), float(np.sum(target**2))
    for size in range(1, columns + 1):
        for subset in itertools.combinations(range(columns), size):
            fitted, *_ = np.linalg.lstsq(design[:, subset], target, rcond=None)
            if np.any(fitted < 0):
                continue
            error = float(np.sum((design[:, subset] @ fitted - target) ** 2))
            if error < best_error:
                best = np.zeros(columns)
                best[list(subset)] = fitted
                best_error = error
    return best
