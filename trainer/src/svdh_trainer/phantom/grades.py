"""Per-joint SvdH grades drawn from a patient-level severity.

Severity is skewed as in real cohorts (most patients with little damage, a
long tail); both hands share it, each joint has its own susceptibility and
noise, so totals spread over 0-280.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdh_runtime.areas import AREAS, HANDS, Area

# Joints that RA damages early and often get higher susceptibility.
_SUSCEPTIBILITY = {
    "mcp2": 1.25,
    "mcp3": 1.2,
    "pip3": 1.1,
    "pip2": 1.05,
    "ulna": 1.2,
    "mcp5": 1.1,
    "radcar": 1.05,
    "capnlun": 1.05,
    "mcp1": 0.8,
    "ip1": 0.75,
    "mc1base": 0.8,
    "cmc3": 0.8,
}


@dataclass(frozen=True)
class PatientGrades:
    """Grades for both hands: ``grades[hand][area.column(hand)]``."""

    severity: float
    grades: dict[str, dict[str, int]]

    def by_joint(self, hand: str, kind: str) -> dict[str, int]:
        """Grades of one hand keyed by the generator's joint names, for erosion or narrowing."""
        return {a.joint: self.grades[hand][a.column(hand)] for a in AREAS if a.kind == kind}

    def columns(self) -> dict[str, int]:
        return {col: g for hand in HANDS for col, g in self.grades[hand].items()}

    def totals(self) -> tuple[int, int, int]:
        """(total, erosion, narrowing) over both hands."""
        erosion = sum(self.grades[h][a.column(h)] for h in HANDS for a in AREAS if a.kind == "E")
        narrowing = sum(self.grades[h][a.column(h)] for h in HANDS for a in AREAS if a.kind == "J")
        return erosion + narrowing, erosion, narrowing


def _grade(area: Area, severity: float, hand_bias: float, noise: float) -> int:
    latent = severity * _SUSCEPTIBILITY.get(area.joint, 1.0) * hand_bias * np.exp(noise)
    latent -= 0.04
    if latent <= 0:
        return 0
    return int(min(area.max_grade, np.floor(latent * (area.max_grade + 1))))


@dataclass(frozen=True)
class Disease:
    """What fixes a patient's grades once the severity is known: each hand's bias and each area's own
    susceptibility noise. Every grade is non-decreasing in the severity, so a severity that only grows
    (:mod:`.progression`) gives damage that only grows, area by area."""

    severity: float
    hand_bias: dict[str, float]
    noise: dict[str, dict[str, float]]  # hand -> column -> normal draw (SD 0.55)

    def grades_at(self, severity: float) -> PatientGrades:
        grades = {
            hand: {a.column(hand): _grade(a, severity, self.hand_bias[hand], self.noise[hand][a.column(hand)])
                   for a in AREAS}
            for hand in HANDS
        }  # fmt: skip
        return PatientGrades(severity, grades)

    @property
    def baseline(self) -> PatientGrades:
        return self.grades_at(self.severity)


def draw_disease(rng: np.random.Generator, severity_shape: tuple[float, float] = (0.7, 3.0)) -> Disease:
    """Draw a patient's severity (Beta distributed), each hand's bias and each area's noise."""
    severity = float(rng.beta(*severity_shape))
    bias: dict[str, float] = {}
    noise: dict[str, dict[str, float]] = {}
    for hand in HANDS:
        bias[hand] = float(np.exp(rng.normal(0.0, 0.15)))
        noise[hand] = {a.column(hand): float(rng.normal(0.0, 0.55)) for a in AREAS}
    return Disease(severity, bias, noise)


def draw_patient(rng: np.random.Generator, severity_shape: tuple[float, float] = (0.7, 3.0)) -> PatientGrades:
    """Draw a patient's severity (Beta distributed) and every area's grade."""
    return draw_disease(rng, severity_shape).baseline
