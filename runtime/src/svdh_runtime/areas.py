"""The van der Heijde modified Sharp scoring areas of the hands and wrists.

Column names follow the RA2-DREAM layout (``LH_mcp_E__1``, ``RH_wrist_J__radcar``).
Per hand: erosion in 16 areas (0-5), joint space narrowing in 15 areas (0-4);
both hands together range 0-280.
"""

from __future__ import annotations

from dataclasses import dataclass

HANDS = ("LH", "RH")
MAX_EROSION = 5
MAX_NARROWING = 4


@dataclass(frozen=True)
class Area:
    """One scored area of one hand."""

    key: str  # column suffix, e.g. "mcp_E__1"
    kind: str  # "E" (erosion) or "J" (joint space narrowing)
    joint: str  # where the generator places it, e.g. "mcp1", "pip3", "radius"

    @property
    def max_grade(self) -> int:
        return MAX_EROSION if self.kind == "E" else MAX_NARROWING

    def column(self, hand: str) -> str:
        return f"{hand}_{self.key}"


EROSION_AREAS: tuple[Area, ...] = (
    Area("mcp_E__ip", "E", "ip1"),
    *(Area(f"pip_E__{d}", "E", f"pip{d}") for d in (2, 3, 4, 5)),
    *(Area(f"mcp_E__{d}", "E", f"mcp{d}") for d in (1, 2, 3, 4, 5)),
    Area("wrist_E__mc1", "E", "mc1base"),
    Area("wrist_E__mul", "E", "multangular"),
    Area("wrist_E__nav", "E", "navicular"),
    Area("wrist_E__lunate", "E", "lunate"),
    Area("wrist_E__radius", "E", "radius"),
    Area("wrist_E__ulna", "E", "ulna"),
)

NARROWING_AREAS: tuple[Area, ...] = (
    *(Area(f"pip_J__{d}", "J", f"pip{d}") for d in (2, 3, 4, 5)),
    *(Area(f"mcp_J__{d}", "J", f"mcp{d}") for d in (1, 2, 3, 4, 5)),
    *(Area(f"wrist_J__cmc{d}", "J", f"cmc{d}") for d in (3, 4, 5)),
    Area("wrist_J__mna", "J", "mna"),
    Area("wrist_J__capnlun", "J", "capnlun"),
    Area("wrist_J__radcar", "J", "radcar"),
)

AREAS: tuple[Area, ...] = EROSION_AREAS + NARROWING_AREAS
HAND_MAX = sum(a.max_grade for a in AREAS)  # 140
TOTAL_MAX = HAND_MAX * len(HANDS)  # 280


AREAS_PER_HAND = len(AREAS)  # 31
# The most each subtotal can be: both hands' erosion (160) and narrowing (120), one hand's total (140).
SUBTOTAL_MAX = {
    "erosion": len(HANDS) * sum(a.max_grade for a in EROSION_AREAS),
    "narrowing": len(HANDS) * sum(a.max_grade for a in NARROWING_AREAS),
    **{hand: HAND_MAX for hand in HANDS},
}
# The joints (sites) of one hand that the areas are graded at, in first-use order: an erosion area and a
# narrowing area of the same joint (mcp_E__2, mcp_J__2) share one site.
SITES: tuple[str, ...] = tuple(dict.fromkeys(area.joint for area in AREAS))  # 22
AREA_SITE: tuple[int, ...] = tuple(SITES.index(area.joint) for area in AREAS)  # per area, its site


def grade_columns() -> list[str]:
    """Every per-area column of both hands, in RA2-DREAM order (erosion, then narrowing; LH, then RH)."""
    return [area.column(hand) for hand in HANDS for area in AREAS]


def max_grades() -> list[int]:
    """Each column's highest grade, in :func:`grade_columns` order."""
    return [area.max_grade for _ in HANDS for area in AREAS]


def area_sites() -> list[int]:
    """For each column of :func:`grade_columns`, its site among both hands' sites (LH's, then RH's)."""
    return [hand * len(SITES) + site for hand in range(len(HANDS)) for site in AREA_SITE]
