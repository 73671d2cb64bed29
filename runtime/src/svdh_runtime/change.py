"""The change between two visits: its interval, its rate per year, and whether it is a progression.

A bundle calibrated on a longitudinal folder (``svdh-train calibrate``) carries
a :class:`~svdh_runtime.manifest.ChangeCalibration`: the smallest detectable
change (SDC) it measured from retest films, and split-conformal residuals of
its changes against the true changes. A change is a *progression* when it
exceeds the route's no-change level (the mean change between two films of one
day) plus the SDC: re-filming the same hands alone gives a larger change less
than 5 % of the time (two-sided).
"""

from __future__ import annotations

from dataclasses import dataclass

from .intervals import Interval
from .manifest import ChangeCalibration, check_level

MIN_YEARS_FOR_RATE = 0.05  # about three weeks: a shorter gap gives no yearly rate


@dataclass(frozen=True)
class Change:
    """A change of the total between two sittings of one patient."""

    total: float
    years: float | None  # between the two sittings' dates; None when a date is missing
    interval: Interval | None  # None for an uncalibrated bundle
    sdc: float | None
    threshold: float | None = None  # a change above it is a progression (zero level + SDC); None: uncalibrated

    @property
    def per_year(self) -> float | None:
        if self.years is None or self.years < MIN_YEARS_FOR_RATE:
            return None
        return self.total / self.years

    @property
    def progressor(self) -> bool | None:
        """True when the change exceeds the route's no-change level plus its SDC; None when uncalibrated."""
        return None if self.threshold is None else self.total > self.threshold

    def to_dict(self) -> dict:
        low = high = level = None
        if self.interval is not None:
            low, high, level = round(self.interval.low, 3), round(self.interval.high, 3), self.interval.level
        per_year = self.per_year
        return {
            "total": round(self.total, 3),
            "low": low,
            "high": high,
            "level": level,
            "years": None if self.years is None else round(self.years, 3),
            "per_year": None if per_year is None else round(per_year, 3),
            "sdc": None if self.sdc is None else round(self.sdc, 3),
            "progression_threshold": None if self.threshold is None else round(self.threshold, 3),
            "progressor": self.progressor,
        }


def change_interval(calibration: ChangeCalibration, change: float, mean_score: float, level: float) -> Interval:
    """The interval around ``change``; ``mean_score``: the mean of the two sittings' scores."""
    check_level(level)
    half = calibration.quantile(level) * calibration.difficulty(mean_score)
    return Interval(level, change - half, change + half)


def measure_change(
    calibration: ChangeCalibration | None, total: float, mean_score: float, years: float | None, level: float | None
) -> Change:
    """A change of ``total`` between two sittings whose scores average ``mean_score``, with its interval and
    flag where the bundle is calibrated (``level``: the interval's, default the calibration's)."""
    if calibration is None:
        return Change(total, years, None, None)
    chosen = calibration.level if level is None else level
    interval = change_interval(calibration, total, mean_score, chosen)
    return Change(total, years, interval, calibration.sdc, calibration.progression_threshold)
