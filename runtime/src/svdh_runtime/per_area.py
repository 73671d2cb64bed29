"""The per-area reading of a bundle with a joint head: each area's grade, where its joint is, which hands.

The graph returns ``areas[N, 62]`` (expected grades, the patient's left hand then
right, RA2-DREAM column order), ``hands[N, 2]`` (the probability that the image
shows each hand) and ``joints[N, 62, 2]`` (each area's joint on the model canvas,
pixels). This module turns one image's rows into named grades, subtotals and
joint positions on the source radiograph.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .areas import AREAS, HANDS, grade_columns
from .preprocess import ContentBox, canvas_to_image

SHOWN_PROBABILITY = 0.5  # a hand counts as shown at this probability or more
LATERALITY_HANDS = {"L": ("LH",), "R": ("RH",), "B": ("LH", "RH")}


@dataclass(frozen=True)
class AreaReading:
    """One image's per-area answer."""

    grades: dict[str, float | None]  # RA2-DREAM column -> expected grade; None for a hand not shown
    hand_probabilities: dict[str, float]  # "LH", "RH" -> probability the image shows it
    shown: tuple[str, ...]  # the hands the model sees
    joints_canvas: dict[str, tuple[float, float]]  # column -> (x, y) on the model canvas, shown hands only
    joints_image: dict[str, tuple[float, float]] | None = None  # the same on the source image (see placed)

    @property
    def graded(self) -> dict[str, float]:
        """The grades of the shown hands."""
        return {column: grade for column, grade in self.grades.items() if grade is not None}

    def subtotals(self) -> dict[str, float | dict[str, float] | None]:
        """Sum of the areas, erosion and narrowing sums, and per hand (None for a hand not shown)."""
        graded = self.graded
        per_hand: dict[str, dict[str, float] | None] = {}
        for hand in HANDS:
            if hand not in self.shown:
                per_hand[hand] = None
                continue
            erosion = sum(graded[a.column(hand)] for a in AREAS if a.kind == "E")
            narrowing = sum(graded[a.column(hand)] for a in AREAS if a.kind == "J")
            per_hand[hand] = {"total": erosion + narrowing, "erosion": erosion, "narrowing": narrowing}
        shown = [v for v in per_hand.values() if v is not None]
        return {
            "areas_sum": sum(v["total"] for v in shown),
            "erosion": sum(v["erosion"] for v in shown),
            "narrowing": sum(v["narrowing"] for v in shown),
            **per_hand,
        }

    def estimate(self, target: str) -> float | None:
        """A subtotal an interval is calibrated for (``erosion``, ``narrowing``, ``LH``, ``RH``); None for a
        hand not shown."""
        value = self.subtotals()[target]
        return None if value is None else float(value["total"] if isinstance(value, dict) else value)

    def disagreement(self, score_raw: float) -> float:
        """The score head's total minus the sum of the areas: the interval's difficulty term."""
        return score_raw - float(self.subtotals()["areas_sum"])

    def placed(self, box: ContentBox, image_shape: tuple[int, int]) -> AreaReading:
        """This reading with each shown area's joint in source-image pixels (x, y; full resolution)."""
        joints = {column: canvas_to_image(x, y, box, image_shape) for column, (x, y) in self.joints_canvas.items()}
        return dataclasses.replace(self, joints_image=joints)

    def laterality_check(self, dicom_laterality: str | None) -> dict[str, object] | None:
        """How the hands seen compare with the DICOM (Image) Laterality; None when the header gives none."""
        if dicom_laterality not in LATERALITY_HANDS:
            return None
        expected = LATERALITY_HANDS[dicom_laterality]
        return {"dicom": dicom_laterality, "agrees": tuple(sorted(expected)) == tuple(sorted(self.shown))}


def read_areas(areas: np.ndarray, hands: np.ndarray, joints: np.ndarray) -> AreaReading:
    """One image's graph rows (``areas[62]``, ``hands[2]``, ``joints[62, 2]``) as an :class:`AreaReading`.

    A hand is shown at probability >= 0.5; when neither reaches it (a radiograph
    shows at least one hand) the likelier one is taken.
    """
    probabilities = {hand: float(p) for hand, p in zip(HANDS, hands)}
    shown = tuple(hand for hand in HANDS if probabilities[hand] >= SHOWN_PROBABILITY)
    if not shown:
        shown = (max(HANDS, key=probabilities.__getitem__),)
    grades: dict[str, float | None] = {}
    positions: dict[str, tuple[float, float]] = {}
    for column, grade, (x, y) in zip(grade_columns(), areas.tolist(), joints.tolist()):
        if column[:2] in shown:
            grades[column] = float(grade)
            positions[column] = (float(x), float(y))
        else:
            grades[column] = None
    return AreaReading(grades, probabilities, shown, positions)
