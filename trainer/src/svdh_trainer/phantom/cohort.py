"""Who the version-2 phantoms are: age, sex and hand size drawn like an RA cohort.

RA cohorts are about 70-75 % women with a mean age in the mid-fifties (SD about
13 years; e.g. the ESPOIR and BARFOT cohorts, trial baselines). Hand length and
breadth follow adult anthropometry by sex (ANSUR II, 2012): women 173 ± 9 mm by
78 ± 4 mm, men 190 ± 10 by 89 ± 5, correlated about 0.6. The canonical hand of
version 1 is 180 mm by 84 mm, so a person's scale is their size over that.
Older patients have a little more damage: severity nudges the age up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANONICAL_LENGTH_MM, CANONICAL_BREADTH_MM = 180.0, 84.0
HAND_SIZE_MM = {"F": ((173.0, 9.0), (78.0, 4.0)), "M": ((190.0, 10.0), (89.0, 5.0))}  # (mean, SD) length, breadth
WOMEN_SHARE = 0.72


@dataclass(frozen=True)
class Person:
    sex: str  # "F" or "M"
    age: float  # years
    scale: tuple[float, float]  # (length, breadth) of the hand against the canonical one

    @property
    def age_string(self) -> str:
        """DICOM Patient's Age: ``055Y``."""
        return f"{int(self.age):03d}Y"


def draw_person(severity: float, rng: np.random.Generator) -> Person:
    sex = "F" if rng.random() < WOMEN_SHARE else "M"
    age = float(np.clip(rng.normal(54.0 + 8.0 * severity, 13.0), 20.0, 90.0))
    (length_mean, length_sd), (breadth_mean, breadth_sd) = HAND_SIZE_MM[sex]
    a, b = rng.standard_normal(2)
    length = length_mean + length_sd * a
    breadth = breadth_mean + breadth_sd * (0.6 * a + 0.8 * b)
    return Person(sex, age, (length / CANONICAL_LENGTH_MM, breadth / CANONICAL_BREADTH_MM))
