"""Longitudinal phantoms: the same people filmed at several visits, their damage growing between them.

A patient's anatomy is drawn once, from streams keyed by the patient and the
part drawn (:mod:`.streams`): the bones, their proportions, the bites of an
erosion. Every visit builds the hands again from those streams with that
visit's grades, so an unchanged joint looks exactly as it did and a joint whose
grade rose keeps its old bites and gains larger ones. What a visit changes:
the patient's age (bone density falls with it), the grades
(:mod:`.progression`), which joints are inflamed and swollen, the hands'
position on the detector and the exposure. A share of patients changes
detector at a follow-up visit (another room, another vendor, a digitised
film), as happens in trials that run for years.

``retest`` films every visit twice on the same day: the same grades, the hands
re-positioned, a new exposure. A test-retest pair measures what a score's
change is worth when nothing changed.

Files: ``images/<Patient_ID>-V<k>.dcm`` (``-V<k>-R<r>`` for retest ``r``, and
``-LH``/``-RH`` after it for one hand per file). The DICOM PatientID is the
same at every visit and StudyDate advances. The two simulated readers read
every film, each visit on its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from svdh_runtime.areas import HANDS

from ..visits import visit_stem
from .clinic import Clinic, ClinicRanges, draw_clinic
from .cohort import draw_person
from .generate import (
    ACQUISITION_PRESETS,
    SITES,
    Films,
    PatientFiles,
    _label_row,
    _scenes,
    ankylose,
    draw_acquisition,
    draw_hands,
    render_films,
)
from .grades import draw_disease
from .morphology import Realism
from .progression import draw_rate, trajectory
from .readers import consensus, read_patient
from .render import Acquisition
from .streams import Streams

DETECTOR_CHANGE_SHARE = 0.25  # patients whose follow-up films come from another detector
VISIT_JITTER_YEARS = 0.08  # visits fall within about a month of their schedule
FIRST_BASELINE = dt.date(2019, 1, 7)


@dataclass(frozen=True)
class Schedule:
    """How often a longitudinal phantom films its patients."""

    visits: int = 3
    interval_years: float = 1.0
    retest: bool = False

    @property
    def acquisitions(self) -> int:
        return 2 if self.retest else 1


def _visit_dates(schedule: Schedule, streams: Streams) -> list[dt.date]:
    rng = streams("schedule")
    baseline = FIRST_BASELINE + dt.timedelta(days=int(rng.integers(0, 3 * 365)))
    dates = [baseline]
    for k in range(1, schedule.visits):
        years = k * schedule.interval_years + float(rng.uniform(-VISIT_JITTER_YEARS, VISIT_JITTER_YEARS))
        dates.append(max(baseline + dt.timedelta(days=round(years * 365.25)), dates[-1] + dt.timedelta(days=1)))
    return dates


@dataclass(frozen=True)
class Detector:
    """A room's detector and processing: what stays the same between two films taken there."""

    acquisition: Acquisition  # the dose is drawn again per film
    scanned: bool  # films digitised on a scanner
    processing_key: tuple[int, ...]  # seeds the room's processing (grid, unsharp mask, scatter, burned-in text)

    def exposure(self, preset: str):  # noqa: ANN201 - the acquire callable of render_films
        """A new exposure on this detector: only the dose is drawn again."""
        dose = ACQUISITION_PRESETS[preset].dose
        return lambda rng: replace(self.acquisition, dose=float(rng.uniform(*dose)))

    def clinic(self, ranges: ClinicRanges):  # noqa: ANN201 - the clinic_for callable of render_films
        """The room's processing with this film's own collimation."""

        def clinic_for(rng: np.random.Generator, field_mm: tuple[float, float], tips: list[float]) -> Clinic:
            room = draw_clinic(np.random.default_rng(self.processing_key), ranges, field_mm, tips)
            film = draw_clinic(rng, ranges, field_mm, tips)
            return replace(room, collimation_mm=film.collimation_mm, black_shutter=film.black_shutter)

        return clinic_for


def _detectors(schedule: Schedule, preset: str, clinic: ClinicRanges, streams: Streams, key: tuple) -> list[Detector]:
    """Each visit's detector. A share of patients moves to another detector at one follow-up visit and stays
    there."""
    rng = streams("detector")
    ranges = ACQUISITION_PRESETS[preset]
    first = Detector(draw_acquisition(rng, ranges), bool(rng.random() < clinic.film_share), (*key, 1))
    change_at = schedule.visits
    if schedule.visits > 1 and rng.random() < DETECTOR_CHANGE_SHARE:
        change_at = int(rng.integers(1, schedule.visits))
    second = Detector(draw_acquisition(rng, ranges), bool(rng.random() < clinic.film_share), (*key, 2))
    return [first if k < change_at else second for k in range(schedule.visits)]


def make_longitudinal_patient(
    out: Path, seed: int, index: int, layout: str, preset: str, realism: Realism, clinic: ClinicRanges,
    schedule: Schedule,
) -> PatientFiles:  # fmt: skip
    """Render one patient's visits (and retests); returns a labels/truth/readers row per sitting."""
    streams = Streams.keyed(seed, index, 2)
    disease = draw_disease(streams("disease"))
    person = draw_person(disease.severity, streams("person"))
    patient_id = f"S{seed}-{index:05d}"
    dates = _visit_dates(schedule, streams)
    years = [(d - dates[0]).days / 365.25 for d in dates]
    rate = draw_rate(streams("rate"), disease.severity)
    visits = trajectory(disease, rate, years)
    detectors = _detectors(schedule, preset, clinic, streams, (seed, index, 4))
    site = SITES[int(streams("site").integers(len(SITES)))]
    scenes = _scenes(layout, seed, index)
    hand_streams = {hand: Streams.keyed(seed, index, 2, number) for number, hand in enumerate(HANDS)}
    labels, truths, readers, joints = [], [], [], {}
    for k, (grades, date, t, detector) in enumerate(zip(visits, dates, years, detectors), start=1):
        fused = ankylose(grades, lambda hand: streams(f"ankylosis:{hand}").random())
        at_visit = replace(person, age=person.age + t)
        hands = draw_hands(grades, fused, at_visit, realism, streams("hands"), hand_streams.get)
        truth = {c: g for hand in HANDS for c, g in grades.grades[hand].items()}
        for r in range(schedule.acquisitions):
            rng = np.random.default_rng([seed, index, 3, k, r])
            stem, day = visit_stem(patient_id, k, r), date.strftime("%Y%m%d")
            minutes = (8 + (index + k) % 9) * 60 + (index * 7) % 40 + 20 * r  # a retest 20 minutes after
            time = f"{minutes // 60:02d}{minutes % 60:02d}{(index * 13) % 60:02d}"
            films = Films(
                patient_id=patient_id,
                stem=stem,
                uid_key=f"{seed}/{index}/V{k}/R{r}",
                accession=f"A{seed % 1000:03d}{index:05d}{k}{r}",
                study_id=f"{(index * 7 + k) % 9000 + 1000}",
                study_time=time,
                burned_in_date=date.strftime("%d.%m.%Y"),
                site=site,
                header={"StudyDate": day, "SeriesDate": day, "ContentDate": day, "AcquisitionDate": day,
                        "AcquisitionTime": time,
                        # both hands' files of a sitting belong to one study
                        "StudyInstanceUID": generate_uid(entropy_srcs=[f"{seed}/{index}/V{k}/R{r}", "study"])},
            )  # fmt: skip
            ranges = replace(clinic, film_share=1.0 if detector.scanned else 0.0)
            joints.update(render_films(out, films, scenes, hands, grades, at_visit, detector.exposure(preset), ranges,
                                       rng, day=lambda number: 0, clinic_for=detector.clinic(ranges)))  # fmt: skip
            visit_columns = {"Visit": k, "Retest": r, "Years_From_Baseline": f"{t:.3f}"}
            read = read_patient(grades.grades, rng)
            labels.append({**visit_columns, **_label_row(patient_id, consensus(read))})
            truths.append({**visit_columns, **_label_row(patient_id, truth)})
            readers += [
                {"Reader": name, **visit_columns,
                 **_label_row(patient_id, {c: g for h in HANDS for c, g in graded[h].items()})}
                for name, graded in read.items()
            ]  # fmt: skip
    return PatientFiles(labels, joints, truths, readers)
