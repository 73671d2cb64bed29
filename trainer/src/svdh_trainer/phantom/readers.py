"""Simulated readers: two trained scorers who read every image and disagree the way real readers do.

Real SvdH data sets do not hold the truth; they hold what readers scored, and
readers differ. Each simulated reader departs from the exact grade of an area
in these ways, with rates that make up the reader's profile:

* a small erosion (grade 1) is missed (scored 0) with ``miss_small_erosion``;
* at a grade border the reader goes one grade up or down with ``border``
  (more often at higher grades, where borders are wider);
* narrowing drifts: each reader leans one way (``narrowing_lean``) on joints
  that are narrowed at all;
* a healthy area is read as grade 1 with ``false_positive``;
* a reader reads a whole image harsher or milder (``mood``, the SD of a
  per-image leaning): what makes totals disagree more than independent
  per-area slips would.

The rates were tuned on 1,500 simulated patients so that the two readers'
totals agree with an ICC(2,1) of 0.89 (root mean square difference 24 units)
and their per-area grades with a pooled quadratic weighted kappa of 0.80,
while a healthy hand is read as about 1 unit. The anchors: trials report ICCs
of about 0.9 between trained readers' status scores (van der Heijde,
J Rheumatol 2000), per-joint weighted kappas of 0.6-0.8, and radiologists
against each other in the reference work reached PCC 0.97 / RMSE 18.75 (Bo et
al., MIUA 2024). The figures on a generated set are in ``svdh-train evaluate``'s
reader table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svdh_runtime.areas import AREAS, HANDS


@dataclass(frozen=True)
class ReaderProfile:
    """How one reader departs from the exact grades (probabilities per area read)."""

    name: str
    miss_small_erosion: float
    border: float
    narrowing_lean: float  # grades: > 0 reads narrowing harsher, < 0 milder
    false_positive: float
    mood: float  # SD of the reader's per-image leaning (grades)


READERS = (
    ReaderProfile("A", miss_small_erosion=0.6, border=0.9, narrowing_lean=0.25, false_positive=0.02, mood=0.45),
    ReaderProfile("B", miss_small_erosion=0.7, border=0.9, narrowing_lean=-0.20, false_positive=0.015, mood=0.45),
)


def read_grade(true: int, kind: str, top: int, reader: ReaderProfile, mood: float, rng: np.random.Generator) -> int:
    """What ``reader`` scores for an area whose exact grade is ``true``, in an image it reads with ``mood``
    (> 0 harsher)."""
    grade = true
    if true == 0:
        if rng.random() < reader.false_positive * (1.0 + max(mood, 0.0)):
            grade = 1
    elif true == 1 and kind == "E" and rng.random() < reader.miss_small_erosion - mood:
        grade = 0
    elif rng.random() < reader.border * (0.6 + 0.2 * true):
        grade += 1 if rng.random() < 0.5 + mood else -1
    if kind == "J" and true > 0 and rng.random() < abs(reader.narrowing_lean):
        grade += 1 if reader.narrowing_lean > 0 else -1
    return int(min(max(grade, 0), top))


def read_patient(
    truth: dict[str, dict[str, int]], rng: np.random.Generator, readers: tuple[ReaderProfile, ...] = READERS
) -> dict[str, dict[str, dict[str, int]]]:
    """Every reader's grades of one patient: ``{reader: {hand: {column: grade}}}``."""
    read = {}
    for reader in readers:
        mood = float(rng.normal(0.0, reader.mood))
        read[reader.name] = {
            hand: {
                area.column(hand): read_grade(
                    truth[hand][area.column(hand)], area.kind, area.max_grade, reader, mood, rng
                )
                for area in AREAS
            }
            for hand in HANDS
        }
    return read


def consensus(read: dict[str, dict[str, dict[str, int]]]) -> dict[str, float]:
    """The readers' mean grade of every area (``LH_mcp_E__1`` -> 1.5), as trials use it."""
    first = next(iter(read.values()))
    return {
        column: float(np.mean([read[reader][hand][column] for reader in read]))
        for hand, grades in first.items()
        for column in grades
    }
