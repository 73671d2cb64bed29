"""How a longitudinal data set names its sittings: one source for the phantom generator and the readers."""

from __future__ import annotations

VISIT_COLUMNS = ("Visit", "Retest", "Years_From_Baseline")  # labels.csv columns of a longitudinal set


def visit_stem(patient_id: str, visit: int, retest: int = 0) -> str:
    """``<Patient_ID>-V<visit>``, or ``<Patient_ID>-V<visit>-R<retest>`` for a retest: a sitting's file stem."""
    return f"{patient_id}-V{visit}" + (f"-R{retest}" if retest else "")
