"""How fast a phantom patient's damage grows: yearly rates drawn like trial cohorts, turned into grades.

Trial and cohort reports measure progression as the yearly change of the
modified Sharp score. Most patients change little: treated arms of trials
report a median change of 0 to 1 unit a year. A minority are rapid
radiographic progressors, defined as a change of 5 or more units a year
(Vastesaeger et al., Rheumatology 2009;48:1114-21, from the ASPIRE and
BeSt trials, where about 10-20 % of methotrexate-treated patients progressed
that fast), and damage at baseline predicts who they are. The mixture below
targets those figures:

* ``stable`` (about 55 %): exponential, mean 0.4 units a year;
* ``slow`` (30 %): log-normal, median 2 units a year (most between 1 and 4);
* ``rapid`` (about 15 % at the cohort's mean severity, more with more damage):
  5 units plus a log-normal of median 4, so above 5 a year with a long tail.

The rates apply to the hands' score (0-280), not the full score with the feet
(0-448); the hands carry about 60 % of it, so these rates are, if anything, on
the fast side for the hands alone. That is deliberate: it gives the
progressor figures enough patients.

A rate becomes grades through the patient's :class:`.grades.Disease`: the
severity rises to the smallest value whose total reaches the baseline total
plus rate times years. Every grade is non-decreasing in the severity, so
damage only grows, area by area, and an area at its maximum stays there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grades import Disease, PatientGrades

RAPID_PER_YEAR = 5.0
MAX_SEVERITY = 30.0  # far past the point where every area is at its maximum


@dataclass(frozen=True)
class ProgressionRates:
    """The mixture yearly rates are drawn from (units of the hands' score per year)."""

    stable_mean: float = 0.4
    slow_share: float = 0.30
    slow_median: float = 2.0
    slow_sigma: float = 0.5
    rapid_share_base: float = 0.10
    rapid_share_per_severity: float = 0.25
    rapid_median_excess: float = 4.0
    rapid_sigma: float = 0.6


def draw_rate(rng: np.random.Generator, severity: float, rates: ProgressionRates = ProgressionRates()) -> float:
    """A patient's yearly rate of progression; a patient with more damage at baseline is more often rapid."""
    u = rng.random()
    rapid_share = rates.rapid_share_base + rates.rapid_share_per_severity * severity
    if u < rapid_share:
        return RAPID_PER_YEAR + float(rng.lognormal(np.log(rates.rapid_median_excess), rates.rapid_sigma))
    if u < rapid_share + rates.slow_share:
        return float(rng.lognormal(np.log(rates.slow_median), rates.slow_sigma))
    return float(rng.exponential(rates.stable_mean))


def total_of(grades: PatientGrades) -> int:
    return grades.totals()[0]


def grades_reaching(disease: Disease, floor_severity: float, target_total: float) -> PatientGrades:
    """The grades at the smallest severity (at least ``floor_severity``) whose total reaches ``target_total``;
    at the top of the scale, every area at its maximum."""
    low, high = floor_severity, MAX_SEVERITY
    if total_of(disease.grades_at(low)) >= target_total:
        return disease.grades_at(low)
    if total_of(disease.grades_at(high)) < target_total:
        return disease.grades_at(high)
    for _ in range(48):  # bisection to far below any step of the total
        middle = (low + high) / 2
        if total_of(disease.grades_at(middle)) >= target_total:
            high = middle
        else:
            low = middle
    return disease.grades_at(high)


def trajectory(disease: Disease, rate: float, years: list[float]) -> list[PatientGrades]:
    """The grades at each visit (``years`` from baseline, ascending): damage only grows."""
    baseline = disease.baseline
    start = total_of(baseline)
    visits, floor = [], disease.severity
    for t in years:
        grades = baseline if t <= 0 else grades_reaching(disease, floor, start + rate * t)
        floor = grades.severity
        visits.append(grades)
    return visits
