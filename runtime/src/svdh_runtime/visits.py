"""Which films are one patient's visits, and in what order: what ``svdh-run progression`` pairs.

DICOM films are grouped by PatientID. A patient's *sitting* is one study
(StudyInstanceUID; both hands' films of a visit belong together, whether on
one film or one per hand); sittings are ordered by the acquisition's date and
time (AcquisitionDate/Time, else the study's). What cannot be grouped or
ordered is an error for that patient, in one line, never a guess: a film
without a PatientID or a date, two studies at the same moment, a sitting that
shows one hand twice. PNG and JPEG files carry no patient or date; they are
paired only by hand (``--baseline A --followup B``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

_HEADER_TAGS = (
    "PatientID",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "SeriesDate",
    "ImageLaterality",
    "Laterality",
)


class VisitError(InputError):
    """Films that cannot be grouped into ordered visits (exit code 2)."""


@dataclass(frozen=True)
class Film:
    """What ordering needs to know of one input; the patient ID never leaves this process unhashed."""

    path: Path
    patient_id: str | None = None
    study: str | None = None
    date: dt.date | None = None
    time: str = ""  # HHMMSS, "" when not given
    laterality: str | None = None  # "L", "R", "B" or None
    sop_class: str = ""
    sop_instance: str = ""
    series: str = ""

    @property
    def when(self) -> tuple[dt.date, str] | None:
        return None if self.date is None else (self.date, self.time)


@dataclass
class Sitting:
    """The films of one patient taken at one study."""

    films: list[Film] = field(default_factory=list)

    @property
    def date(self) -> dt.date | None:
        return self.films[0].date

    @property
    def when(self) -> tuple[dt.date, str] | None:
        return self.films[0].when

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.films]


@dataclass
class PatientVisits:
    """One patient's sittings, earliest first; ``problem`` says why they could not be ordered."""

    patient_id: str
    sittings: list[Sitting] = field(default_factory=list)
    problem: str | None = None


def read_film(path: Path) -> Film:
    """The header facts of a DICOM file (no pixels read); a PNG or JPEG gives a film with none."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
    except InvalidDicomError:
        return Film(Path(path))
    except OSError as exc:
        raise VisitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    date = _date(ds.get("AcquisitionDate")) or _date(ds.get("StudyDate")) or _date(ds.get("SeriesDate"))
    time = ds.get("AcquisitionTime") or ds.get("StudyTime")
    laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper() or None
    return Film(
        path=Path(path),
        patient_id=str(ds.get("PatientID") or "").strip() or None,
        study=str(ds.get("StudyInstanceUID") or "").strip() or None,
        date=date,
        time=str(time or "").split(".")[0].strip().ljust(6, "0")[:6] if time else "",
        laterality=laterality if laterality in ("L", "R", "B") else None,
        sop_class=str(ds.get("SOPClassUID") or ""),
        sop_instance=str(ds.get("SOPInstanceUID") or ""),
        series=str(ds.get("SeriesInstanceUID") or ""),
    )


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def group_visits(films: list[Film], label: callable = str) -> tuple[list[PatientVisits], list[tuple[Path, str]]]:
    """Each patient's ordered sittings, and the films that belong to no patient (with why). ``label(id)``:
    how a message names a patient (a pseudonym: messages never hold the ID)."""
    orphans = [
        (f.path, "no PatientID (a PNG or JPEG, or a DICOM without one): pair it with --baseline and --followup")
        for f in films
        if f.patient_id is None
    ]
    by_patient: dict[str, list[Film]] = defaultdict(list)
    for film in films:
        if film.patient_id is not None:
            by_patient[film.patient_id].append(film)
    return [order_sittings(pid, group, label(pid)) for pid, group in by_patient.items()], orphans


def order_sittings(patient_id: str, films: list[Film], label: str) -> PatientVisits:
    """Group one patient's films into sittings and order them by date and time."""
    visits = PatientVisits(patient_id)
    undated = [f for f in films if f.date is None]
    if undated:
        visits.problem = (
            f"patient {label}: {undated[0].path} has no AcquisitionDate or StudyDate, so its visits cannot be "
            "ordered; pair films with --baseline and --followup"
        )
        return visits
    studies: dict[object, Sitting] = defaultdict(Sitting)
    for film in films:
        studies[film.study or film.when].films.append(film)
    sittings = sorted(studies.values(), key=lambda s: min(f.when for f in s.films))
    for sitting in sittings:
        problem = _sitting_problem(sitting, label)
        if problem:
            visits.problem = problem
            return visits
    for earlier, later in zip(sittings, sittings[1:]):
        if earlier.when == later.when:
            visits.problem = (
                f"patient {label}: two studies on {earlier.date.isoformat()} at the same time "
                f"({earlier.paths[0]}, {later.paths[0]}): cannot tell which came first; pair them with --baseline "
                "and --followup"
            )
            return visits
    visits.sittings = sittings
    return visits


def _sitting_problem(sitting: Sitting, label: str) -> str | None:
    dates = {f.date for f in sitting.films}
    if len(dates) > 1:
        return f"patient {label}: one study holds films of different dates ({sitting.paths[0]})"
    sides = [f.laterality for f in sitting.films if f.laterality is not None]
    hands = [h for side in sides for h in (("L", "R") if side == "B" else (side,))]
    if len(hands) != len(set(hands)):
        return (
            f"patient {label}: the study of {sitting.date.isoformat()} shows a hand twice ({sitting.paths[0]}): "
            "choose the films with --baseline and --followup"
        )
    return None


def visit_pairs(visits: PatientVisits) -> list[tuple[Sitting, Sitting, str]]:
    """Consecutive sittings, and baseline to the last when there are more than two: (earlier, later, kind)."""
    s = visits.sittings
    pairs = [(a, b, "consecutive") for a, b in zip(s, s[1:])]
    if len(s) > 2:
        pairs.append((s[0], s[-1], "baseline_to_last"))
    return pairs
