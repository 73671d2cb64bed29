"""Locally adaptive split-conformal prediction intervals, and severity from the score's distribution.

A bundle calibrated with ``svdh-train calibrate`` carries, per target (the total
and, with a joint head, the erosion and narrowing sums and each hand's total):

- a difficulty model ``d = base + per_point * max(estimate, 0) + per_disagreement * disagreement``,
  where ``disagreement`` is how far the score head's total and the sum of the
  areas differ (0 without a joint head): a normal hand gets a small ``d``, a
  destroyed one or one the two heads disagree on a large one;
- the sorted normalised residuals ``|truth - estimate| / d`` of calibration
  images the model never saw.

The interval at level ``L`` is ``estimate -+ q * d`` with ``q`` the
``ceil((n + 1) L)``-th smallest residual: split-conformal coverage of at least
``L`` on exchangeable data, whatever the model. Severity probabilities are those
of the same predictive distribution (the estimate plus ``d`` times a residual
drawn from the symmetrised calibration residuals) over the severity bins, so the
class and the score can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .manifest import IntervalCalibration, SeverityClass, check_level

__all__ = ["IntervalCalibration", "Interval", "check_level", "interval", "severity_probabilities"]


@dataclass(frozen=True)
class Interval:
    level: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"level": self.level, "low": round(self.low, 3), "high": round(self.high, 3)}


def interval(
    calibration: IntervalCalibration,
    estimate: float,
    disagreement: float,
    level: float,
    bounds: tuple[float, float],
) -> Interval:
    """The interval around ``estimate``, clipped to ``bounds`` (the score range)."""
    half = calibration.quantile(level) * calibration.difficulty(estimate, disagreement)
    low, high = max(bounds[0], estimate - half), min(bounds[1], estimate + half)
    return Interval(level, min(low, bounds[1]), max(high, bounds[0]))


def severity_probabilities(
    calibration: IntervalCalibration,
    estimate: float,
    disagreement: float,
    classes: Sequence[SeverityClass],
    bounds: tuple[float, float],
) -> list[float]:
    """Probability of each severity class under the predictive distribution of the total."""
    scores = np.asarray(calibration.scores, dtype=np.float64)
    spread = np.concatenate([scores, -scores]) * calibration.difficulty(estimate, disagreement)
    values = np.clip(estimate + spread, bounds[0], bounds[1])
    uppers = np.array([cls.upper for cls in classes[:-1]])
    index = np.searchsorted(uppers, values, side="right")  # severity_index for every value at once
    counts = np.bincount(index, minlength=len(classes))
    return (counts / counts.sum()).tolist()
