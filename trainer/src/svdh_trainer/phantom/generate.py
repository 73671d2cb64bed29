"""Generate a phantom dataset: DICOM radiographs, ``labels.csv`` and ``joints.json``.

Each image is made from its own random stream ``(seed, index)``, so a dataset
is identical however many worker processes made it.

``realism`` 1 draws the phantoms of version 1, byte for byte: one canonical
hand, clean lesions, exact labels. ``realism`` 2 (the default) draws people
(:mod:`.cohort`, :mod:`.morphology`), clinics (:mod:`.clinic`) and readers
(:mod:`.readers`): ``labels.csv`` then holds the two readers' mean grades, as
trials use them, ``readers.csv`` each reader's grades (a ``Reader`` column) and
``truth.csv`` the exact grades, in the layout of ``labels.csv``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from svdh_runtime.areas import AREAS, HANDS, grade_columns
from svdh_runtime.files import atomic_write_text

from ..visits import VISIT_COLUMNS
from .anatomy import Hand, Pose, add_ring, build_hand
from .clinic import CLINIC_PRESETS, Clinic, ClinicRanges, draw_clinic, scan_film, trabecular_texture
from .cohort import Person, draw_person
from .dicom import write_radiograph, write_scanned_film
from .grades import PatientGrades, draw_patient
from .morphology import Realism, draw_morphology
from .readers import consensus, read_patient
from .render import Acquisition, expose, exposed_signal, path_lengths, quantise
from .shapes import Bone, Tube
from .streams import Streams

if TYPE_CHECKING:
    from .longitudinal import Schedule

LABEL_COLUMNS = ["Patient_ID", "Overall_Tol", "Overall_erosion", "Overall_narrowing", *grade_columns()]
READER_COLUMNS = ["Patient_ID", "Reader", *LABEL_COLUMNS[1:]]
LONGITUDINAL_COLUMNS = ["Patient_ID", *VISIT_COLUMNS, *LABEL_COLUMNS[1:]]
LONGITUDINAL_READER_COLUMNS = ["Patient_ID", "Reader", *VISIT_COLUMNS, *LABEL_COLUMNS[1:]]
LAYOUTS = ("both", "single", "mixed")  # mixed: half the patients on one film, half one hand per file
MIXED_BOTH_SHARE = 0.5
REALISMS = (1, 2)
WRIST_NARROWING = ("cmc3", "cmc4", "cmc5", "mna", "capnlun", "radcar")
CARPAL_EROSION = ("multangular", "navicular", "lunate")
SITES = ("Clinic North", "St. Elsewhere Rheumatology", "Trial site 014", "Radiology Dept B")


@dataclass(frozen=True)
class AcquisitionRanges:
    """The ranges acquisitions are drawn from; presets below."""

    spacing_mm: tuple[tuple[float, float], ...]  # one of these intervals, uniformly
    bits: tuple[int, ...]
    monochrome1_share: float
    dose: tuple[float, float]
    blur_mm: tuple[float, float]
    heel: float
    gamma: tuple[tuple[float, float], ...]
    cr_share: float


ACQUISITION_PRESETS = {
    "default": AcquisitionRanges(
        ((0.17, 0.26),), (10, 12, 14, 16), 0.3, (900.0, 4000.0), (0.08, 0.3), 0.15, ((0.85, 1.15),), 0.4
    ),
    # Settings training never sees: finer and coarser detectors, more noise and blur,
    # other processing curves, mostly MONOCHROME1.
    "shifted": AcquisitionRanges(
        ((0.13, 0.16), (0.27, 0.31)),
        (10, 12, 16),
        0.7,
        (400.0, 900.0),
        (0.3, 0.45),
        0.25,
        ((0.7, 0.82), (1.18, 1.3)),
        0.6,
    ),
}


def _uniform_from(rng: np.random.Generator, intervals: tuple[tuple[float, float], ...]) -> float:
    lo, hi = intervals[int(rng.integers(len(intervals)))]
    return float(rng.uniform(lo, hi))


def draw_acquisition(rng: np.random.Generator, ranges: AcquisitionRanges) -> Acquisition:
    return Acquisition(
        pixel_spacing_mm=_uniform_from(rng, ranges.spacing_mm),
        bits_stored=int(rng.choice(ranges.bits)),
        photometric="MONOCHROME1" if rng.random() < ranges.monochrome1_share else "MONOCHROME2",
        dose=float(rng.uniform(*ranges.dose)),
        blur_mm=float(rng.uniform(*ranges.blur_mm)),
        heel=float(rng.uniform(-ranges.heel, ranges.heel)),
        gamma=_uniform_from(rng, ranges.gamma),
        modality="CR" if rng.random() < ranges.cr_share else "DX",
    )


def _marker(letter: str, x: float, y: float, size: float = 10.0) -> list[Tube]:
    """A lead side marker: block-letter strokes (mm, image frame)."""
    w, h = size * 0.6, size
    strokes = {
        "L": [((0, 0), (0, h)), ((0, h), (w, h))],
        "R": [
            ((0, 0), (0, h)),
            ((0, 0), (w * 0.8, 0)),
            ((w * 0.8, 0), (w, h * 0.25)),
            ((w, h * 0.25), (w * 0.8, h * 0.5)),
            ((w * 0.8, h * 0.5), (0, h * 0.5)),
            ((w * 0.3, h * 0.5), (w, h)),
        ],
    }[letter]
    return [Tube(np.array([x + a[0], y + a[1]]), np.array([x + b[0], y + b[1]]), 0.9, 8.0) for a, b in strokes]


def _pose(rng: np.random.Generator, x: float, y: float, mirror: bool) -> Pose:
    return Pose(
        offset=(x + rng.uniform(-8, 8), y + rng.uniform(-6, 6)),
        rotation_deg=float(np.clip(rng.normal(0, 6), -15, 15)),
        scale=float(rng.uniform(0.88, 1.12)),
        mirror=mirror,
    )


def _hand(patient: PatientGrades, hand: str, rng: np.random.Generator) -> Hand:
    built = build_hand(patient.by_joint(hand, "E"), patient.by_joint(hand, "J"), rng)
    if rng.random() < 0.08:
        add_ring(built, int(rng.choice((3, 4))), rng)
    return built


def _joint_records(hand_name: str, hand: Hand, patient: PatientGrades, spacing: float) -> list[dict]:
    records = []
    for area in AREAS:
        site = hand.sites[area.joint]
        column = area.column(hand_name)
        records.append(
            {
                "column": column,
                "hand": hand_name,
                "kind": area.kind,
                "x": round(float(site.centre[0] / spacing), 1),
                "y": round(float(site.centre[1] / spacing), 1),
                "radius": round(float(site.radius / spacing), 1),
                "grade": patient.grades[hand_name][column],
            }
        )
    return records


def _scenes(layout: str, seed: int, index: int) -> list[tuple[str, list[tuple[str, float, bool]], tuple[float, float]]]:
    """The films of a patient: (file suffix, [(hand, x mm, mirrored)], field mm). The patient's right hand is
    on the image's left (radiological convention), thumbs inward; a left hand is a mirrored right hand. A
    ``mixed`` layout decides per patient from its own stream, so the patient drawn is the same as in the
    other layouts."""
    if layout == "mixed":
        layout = "both" if np.random.default_rng([seed, index, 1]).random() < MIXED_BOTH_SHARE else "single"
    if layout == "both":
        return [("", [("RH", 78.0, False), ("LH", 242.0, True)], (320.0, 250.0))]
    return [(f"-{h}", [(h, 80.0, h == "LH")], (160.0, 250.0)) for h in HANDS]


@dataclass
class PatientFiles:
    """What one patient adds to the dataset's tables."""

    labels: list[dict]  # labels.csv rows: one, or one per sitting of a longitudinal patient
    joints: dict  # joints.json records per image
    truth: list[dict] | None = None  # truth.csv rows (version 2)
    readers: list[dict] | None = None  # readers.csv rows (version 2)


def make_patient(out: Path, seed: int, index: int, layout: str, preset: str) -> tuple[dict, dict]:
    """Render one patient's image(s) as version 1 did; return the label row and the joint records per file."""
    rng = np.random.default_rng([seed, index])
    patient = draw_patient(rng)
    patient_id = f"S{seed}-{index:05d}"
    total, erosion, narrowing = patient.totals()
    row = {
        "Patient_ID": patient_id,
        "Overall_Tol": total,
        "Overall_erosion": erosion,
        "Overall_narrowing": narrowing,
        **patient.columns(),
    }
    joints = {}
    for suffix, hands, (width_mm, height_mm) in _scenes(layout, seed, index):
        acq = draw_acquisition(rng, ACQUISITION_PRESETS[preset])
        spacing = acq.pixel_spacing_mm
        shape = (int(height_mm / spacing), int(width_mm / spacing))
        placed, markers, records = [], [], []
        for hand_name, x, mirror in hands:
            hand = _hand(patient, hand_name, rng).transformed(_pose(rng, x, 212.0, mirror))
            placed.append(hand)
            records += _joint_records(hand_name, hand, patient, spacing)
            markers += _marker(hand_name[0], x + (45.0 if mirror else -55.0), 12.0)
        stored = expose(path_lengths(placed, markers, shape, spacing), acq, rng)
        name = f"{patient_id}{suffix}.dcm"
        laterality = "B" if len(hands) == 2 else hands[0][0][0]
        write_radiograph(
            out / "images" / name,
            stored,
            patient_id=patient_id,
            uid_seed=f"{seed}/{index}{suffix}",
            modality=acq.modality,
            photometric=acq.photometric,
            bits_stored=acq.bits_stored,
            pixel_spacing_mm=spacing,
            laterality=laterality,
            day=index,
        )
        joints[f"images/{name}"] = {
            "pixel_spacing_mm": round(spacing, 5),
            "rows": shape[0],
            "columns": shape[1],
            "joints": records,
        }
    return row, joints


def _label_row(patient_id: str, grades: dict[str, float | int]) -> dict:
    """A labels.csv row from per-area grades (exact, or a readers' mean)."""
    erosion = sum(v for c, v in grades.items() if "_E__" in c)
    narrowing = sum(v for c, v in grades.items() if "_J__" in c)
    row = {"Patient_ID": patient_id, "Overall_Tol": erosion + narrowing, "Overall_erosion": erosion}
    row["Overall_narrowing"] = narrowing
    return {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in {**row, **grades}.items()}


def ankylose(patient: PatientGrades, chance: Callable[[str], float]) -> list[str]:
    """Severe disease fuses the carpus: readers score every wrist area of a fused hand at its maximum.
    ``chance(hand)``: a uniform draw, taken only for a hand whose patient is severe enough."""
    fused = []
    for hand in HANDS:
        if patient.severity > 0.55 and chance(hand) < 0.35:
            for area in AREAS:
                if (area.kind == "J" and area.joint in WRIST_NARROWING) or (
                    area.kind == "E" and area.joint in CARPAL_EROSION
                ):
                    patient.grades[hand][area.column(hand)] = area.max_grade
            fused.append(hand)
    return fused


def make_patient_v2(
    out: Path, seed: int, index: int, layout: str, preset: str, realism: Realism, clinic_ranges: ClinicRanges
) -> PatientFiles:
    """Render one patient as version 2 draws them: a person, a clinic, two readers."""
    rng = np.random.default_rng([seed, index])  # the stream of version 1: the same patients, the same grades
    patient = draw_patient(rng)
    fused = ankylose(patient, lambda hand: rng.random())
    person = draw_person(patient.severity, rng)
    patient_id = f"S{seed}-{index:05d}"
    truth = {c: g for hand in HANDS for c, g in patient.grades[hand].items()}
    read = read_patient(patient.grades, rng)
    readers = [
        {"Reader": name, **_label_row(patient_id, {c: g for h in HANDS for c, g in grades[h].items()})}
        for name, grades in read.items()
    ]
    hands = draw_hands(patient, fused, person, realism, rng)
    site = SITES[int(rng.integers(len(SITES)))]
    films = Films(
        patient_id=patient_id,
        stem=patient_id,
        uid_key=f"{seed}/{index}",
        accession=f"A{seed % 1000:03d}{index:06d}",
        study_id=f"{index % 9000 + 1000}",
        study_time=f"{8 + index % 9:02d}{(index * 7) % 60:02d}{(index * 13) % 60:02d}",
        burned_in_date=f"{(index * 7) % 28 + 1:02d}.{(index % 12) + 1:02d}.2024",
        site=site,
    )
    acquire = lambda r: draw_acquisition(r, ACQUISITION_PRESETS[preset])  # noqa: E731
    joints = render_films(out, films, _scenes(layout, seed, index), hands, patient, person, acquire,
                          clinic_ranges, rng, day=lambda number: index * 3 + number)  # fmt: skip
    return PatientFiles([_label_row(patient_id, consensus(read))], joints, [_label_row(patient_id, truth)], readers)


def draw_hands(
    patient: PatientGrades,
    fused: list[str],
    person: Person,
    realism: Realism,
    rng: np.random.Generator,
    streams: Callable[[str], Streams] | None = None,
) -> dict[str, Hand]:
    """Both hands of a person with the patient's grades. ``streams(hand)``: keyed streams that draw the same
    person at every visit; without them everything comes from ``rng``, in order (``rng`` is unused with)."""
    hands = {}
    for hand_name in HANDS:
        erosion, narrowing = patient.by_joint(hand_name, "E"), patient.by_joint(hand_name, "J")
        keyed = streams(hand_name) if streams is not None else None
        morph = draw_morphology(
            person.scale, person.age, person.sex, patient.severity, erosion, narrowing, rng, realism, keyed
        )
        built = build_hand(erosion, narrowing, rng, morph, keyed)
        ring_rng = keyed("ring") if keyed is not None else rng
        if ring_rng.random() < 0.08:
            add_ring(built, int(ring_rng.choice((3, 4))), ring_rng)
            built.features.append("ring")
        if hand_name in fused:
            built.features.append("carpal_ankylosis")
        hands[hand_name] = built
    return hands


@dataclass(frozen=True)
class Films:
    """Who and when the films of one sitting are: file names, UIDs and header values."""

    patient_id: str
    stem: str  # file name stem: the patient ID, or <patient>-V<k>[-R<r>] for a visit
    uid_key: str  # what the UIDs derive from
    accession: str
    study_id: str
    study_time: str
    burned_in_date: str  # the date a clinic burns into the film (DD.MM.YYYY)
    site: str
    header: dict = field(default_factory=dict)  # more attributes (a visit's StudyDate, PatientAge)


def render_films(
    out: Path,
    films: Films,
    scenes: list,
    hands: dict[str, Hand],
    patient: PatientGrades,
    person: Person,
    acquire: Callable[[np.random.Generator], Acquisition],
    clinic_ranges: ClinicRanges,
    rng: np.random.Generator,
    day: Callable[[int], int],
    clinic_for: Callable[[np.random.Generator, tuple[float, float], list[float]], Clinic] | None = None,
) -> dict:
    """Pose, expose and write the films of one sitting (one per scene); returns the joint records per file.
    ``clinic_for(rng, field, fingertips)``: the film's clinic (default: drawn from ``clinic_ranges``)."""
    joints = {}
    for number, (suffix, placed_hands, (width_mm, height_mm)) in enumerate(scenes, start=1):
        acq = acquire(rng)
        spacing = acq.pixel_spacing_mm
        shape = (int(height_mm / spacing), int(width_mm / spacing))
        placed, markers, records, features = [], [], [], []
        for hand_name, x, mirror in placed_hands:
            wrist_y = min(240.0, 30.0 + 182.0 * person.scale[0])  # a larger hand lies lower: its fingertips fit
            hand = hands[hand_name].transformed(_pose(rng, x, wrist_y, mirror))
            placed.append(hand)
            records += _joint_records(hand_name, hand, patient, spacing)
            markers += _marker(hand_name[0], x + (45.0 if mirror else -55.0), 12.0)
            features += [f"{hand_name}:{f}" for f in hand.features]
        tips = [float(min(b.end[1], b.start[1])) for h in placed for b in h.bones if isinstance(b, Bone)]
        if clinic_for is None:
            clinic = draw_clinic(rng, clinic_ranges, (width_mm, height_mm), tips)
        else:
            clinic = clinic_for(rng, (width_mm, height_mm), tips)
        texture = trabecular_texture(shape, spacing, clinic, rng)
        paths = path_lengths(placed, markers, shape, spacing, texture)
        text = ("L" if "LH" in suffix else "R" if "RH" in suffix else "R        L", "PA", films.burned_in_date,
                films.site)  # fmt: skip
        signal = exposed_signal(paths, acq, rng, clinic, text)
        features += [name for name, on in (("burned_in_text", clinic.text), ("grid_lines", clinic.grid is not None),
                                           ("unsharp_mask", clinic.unsharp is not None)) if on]  # fmt: skip
        if clinic.collimation_mm[1] > min(tips, default=0.0):
            features.append("fingertip_cut_off")
        name = f"{films.stem}{suffix}.dcm"
        laterality = "B" if len(placed_hands) == 2 else placed_hands[0][0][0]
        header = {
            "AccessionNumber": f"{films.accession}{number}",
            "StudyID": films.study_id,
            "StudyTime": films.study_time,
            "SeriesNumber": number,
            "InstanceNumber": 1,
            "PatientSex": person.sex,
            "PatientAge": person.age_string,
            "InstitutionName": films.site,
            "BurnedInAnnotation": "YES" if clinic.text else "NO",
            **films.header,
        }
        uid_seed = f"{films.uid_key}{suffix}"
        if rng.random() < clinic_ranges.film_share:
            film = scan_film(signal, spacing, rng)
            write_scanned_film(out / "images" / name, film.jpeg, film.shape, patient_id=films.patient_id,
                               uid_seed=f"{uid_seed}/v2", laterality=laterality, day=day(number),
                               header=header)  # fmt: skip
            for record in records:
                x, y = film.point(record["x"], record["y"])
                record["x"], record["y"] = round(float(x), 1), round(float(y), 1)
            shape, features = film.shape, [*features, "scanned_film"]
        else:
            write_radiograph(out / "images" / name, quantise(signal, acq), patient_id=films.patient_id,
                             uid_seed=f"{uid_seed}/v2", modality=acq.modality,
                             photometric=acq.photometric, bits_stored=acq.bits_stored, pixel_spacing_mm=spacing,
                             laterality=laterality, day=day(number), header=header)  # fmt: skip
        joints[f"images/{name}"] = {
            "pixel_spacing_mm": round(spacing, 5),
            "rows": shape[0],
            "columns": shape[1],
            "joints": records,
            "features": features,
            "person": {"sex": person.sex, "age": round(person.age, 1)},
        }
    return joints


def _work(args: tuple) -> PatientFiles:
    out, seed, index, layout, preset, realism, features, clinic, schedule = args
    if schedule is not None:
        from .longitudinal import make_longitudinal_patient

        return make_longitudinal_patient(out, seed, index, layout, preset, features, clinic, schedule)
    if realism == 1:
        row, joints = make_patient(out, seed, index, layout, preset)
        return PatientFiles([row], joints)
    return make_patient_v2(out, seed, index, layout, preset, features, clinic)


def generate(
    out: Path,
    n: int,
    seed: int,
    *,
    layout: str = "both",
    preset: str = "default",
    workers: int | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
    realism: int = 2,
    features: Realism | None = None,
    clinic: ClinicRanges | None = None,
    schedule: Schedule | None = None,
) -> Path:
    """Write ``n`` phantom patients to ``out``; returns the path of ``labels.csv``. ``features`` and
    ``clinic`` change the shares version 2 draws with (tests ask for hardware on every hand, say; the
    acquisition preset's clinics by default). ``schedule``: film every patient at several visits, or twice
    (:mod:`.longitudinal`); version 2 only."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    if preset not in ACQUISITION_PRESETS:
        raise ValueError(f"acquisition preset must be one of {tuple(ACQUISITION_PRESETS)}")
    if realism not in REALISMS:
        raise ValueError(f"realism must be one of {REALISMS}")
    if schedule is not None:
        if realism != 2:
            raise ValueError("longitudinal phantoms need realism 2 (people and readers)")
        if schedule.visits < 1 or schedule.interval_years <= 0:
            raise ValueError("a schedule needs at least one visit and a positive interval")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    features, clinic = features or Realism(), clinic or CLINIC_PRESETS[preset]
    jobs = [(out, seed, i, layout, preset, realism, features, clinic, schedule) for i in range(n)]
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    if workers == 1:
        results = list(progress(map(_work, jobs)))
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(progress(pool.map(_work, jobs, chunksize=4)))
    columns, reader_columns = (
        (LABEL_COLUMNS, READER_COLUMNS) if schedule is None else (LONGITUDINAL_COLUMNS, LONGITUDINAL_READER_COLUMNS)
    )
    _write_table(out / "labels.csv", columns, [row for r in results for row in r.labels])
    if realism > 1:
        _write_table(out / "truth.csv", columns, [row for r in results for row in r.truth])
        _write_table(out / "readers.csv", reader_columns, [row for r in results for row in r.readers])
    joints = {name: record for r in results for name, record in r.joints.items()}
    atomic_write_text(out / "joints.json", json.dumps(joints))
    meta = {"generator": "svdh-train phantom", "n": n, "seed": seed, "layout": layout, "acquisition": preset}
    if realism > 1:
        meta["realism"] = realism
    if schedule is not None:
        meta |= {"visits": schedule.visits, "interval_years": schedule.interval_years, "retest": schedule.retest}
    (out / "phantom.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out / "labels.csv"


def _write_table(path: Path, columns: list[str], rows: list[dict]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)
