"""DICOM results for a scored radiograph, made with highdicom (optional extra ``dicom-results``).

* a Comprehensive 3D SR holding a TID 1500 measurement report: the SvdH total
  (with the algorithm's name and version, and its prediction interval when the
  bundle is calibrated) and the severity class, referencing the source instance;
  with a joint head also the erosion and narrowing sums and hand totals, and one
  planar-ROI group per graded area: its grade, its joint as a point on the
  source image, and the joint as finding site (SNOMED CT with laterality where
  DICOM's code tables have the joint, see :mod:`svdh_runtime.anatomy_codes`);
* a Secondary Capture of the Grad-CAM overlay with the score burned in.

Both join the source's study as new series. svdh's concepts have no standard
codes, so they use the private coding scheme ``99SVDH``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .change import Change
from .errors import InputError, MissingDependencyError, install_hint
from .manifest import Manifest
from .scoring import Prediction

SCHEME = "99SVDH"
MANUFACTURER = "svdh"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
CONVERTED_VRS = ("DA", "DT", "TM", "DS", "IS", "UI", "AS")  # values that are parsed when copied
REFERENCED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")  # results need them


@dataclass(frozen=True)
class DicomResults:
    structured_report: object  # pydicom Dataset
    secondary_capture: object  # pydicom Dataset
    dropped: tuple[str, ...] = ()  # attributes of the source left empty because their values were invalid


def drop_invalid_values(source: object) -> tuple[str, ...]:
    """Empty every top-level date, time, number or UID of ``source`` whose value its VR does not allow (a birth
    date written ``1945-03-17``), which the results could not copy; returns their keywords (never the values:
    they may be patient data). Names and other text are copied as they are, so the results still match."""
    from collections.abc import Sequence

    import pydicom
    from pydicom import config
    from pydicom.datadict import dictionary_VR
    from pydicom.valuerep import validate_value

    dropped = []
    for tag in list(source.keys()):
        raw = source.get_item(tag)  # as read: not yet converted (conversion would warn, quoting the value)
        try:
            vr = raw.VR or dictionary_VR(tag)
        except KeyError:  # a private tag of unknown VR: not copied to the results
            continue
        if vr not in CONVERTED_VRS:
            continue
        value = raw.value
        if isinstance(value, bytes):
            text = value.decode("ascii", "replace")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        try:
            for part in text.strip(" \0").split("\\"):
                validate_value(vr, part.strip(" \0"), config.RAISE)
        except Exception:  # any way a value can be wrong
            source[tag] = pydicom.DataElement(tag, vr, "")
            dropped.append(source[tag].keyword or f"({tag.group:04X},{tag.element:04X})")
    return tuple(dropped)


def _highdicom():  # noqa: ANN202
    try:
        import highdicom
    except ImportError:
        raise MissingDependencyError(f"DICOM results need highdicom: {install_hint('dicom-results')}") from None
    return highdicom


def _result_uids(source_uid: str, model_sha256: str):  # noqa: ANN202
    """UIDs derived from the source instance and the model: scoring the same image with the same model again
    (a rerun, a node restarted mid-delivery) yields the same SR and SC instances, never duplicates."""
    from pydicom.uid import generate_uid

    if not source_uid:
        return lambda role: generate_uid()
    return lambda role: generate_uid(entropy_srcs=["svdh", source_uid, model_sha256, role])


@dataclass(frozen=True)
class PriorChange:
    """The change since a prior result of the same patient, as the SR reports it (with a reference to the
    prior instance)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    change: Change
    route: str  # "paired" or "difference"


def make_dicom_results(
    source_path: Path,
    prediction: Prediction,
    overlay_rgb: np.ndarray,
    manifest: Manifest,
    model_sha256: str,
    prior: PriorChange | None = None,
) -> DicomResults:
    """Build the SR and the SC for one scored DICOM (headers re-read, pixels not needed); ``prior``: the
    change since a prior result, reported in the SR."""
    import pydicom

    hd = _highdicom()
    with warnings.catch_warnings():  # pydicom's and highdicom's warnings quote header values: never shown
        warnings.simplefilter("ignore")
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        dropped = drop_invalid_values(source)
        unusable = [keyword for keyword in REFERENCED_UIDS if keyword in dropped]
        if unusable:
            raise InputError(f"invalid {', '.join(unusable)}: results could not reference this image")
        return _make(source, dropped, prediction, overlay_rgb, manifest, model_sha256, hd, prior)


def _make(
    source: object,
    dropped: tuple[str, ...],
    prediction: Prediction,
    overlay_rgb: np.ndarray,
    manifest: Manifest,
    model_sha256: str,
    hd: object,
    prior: PriorChange | None = None,
) -> DicomResults:
    from pydicom.uid import generate_uid

    uid = _result_uids(str(source.get("SOPInstanceUID", "")), model_sha256)
    code = hd.sr.CodedConcept
    algorithm = hd.sr.AlgorithmIdentification(
        name=manifest.name, version=manifest.version, parameters=[f"sha256:{model_sha256[:16]}"]
    )
    device = hd.sr.ObserverContext(
        observer_type=code("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[model_sha256]),
            name="svdh",
            manufacturer_name=MANUFACTURER,
            model_name=f"{manifest.name} {manifest.version}",
        ),
    )
    score = hd.sr.Measurement(
        name=code("SVDH-HW", SCHEME, "van der Heijde modified Sharp score, hands and wrists"),
        value=float(round(prediction.score, 2)),
        unit=code("{score}", "UCUM", "score"),
        algorithm_id=algorithm,
    )
    severity = hd.sr.QualitativeEvaluation(
        name=code("SVDH-SEVERITY", SCHEME, "Radiographic RA severity class"),
        value=code(f"SVDH-SEV-{prediction.severity.upper()}", SCHEME, prediction.severity),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("tracking"), identifier="SvdH score"),
        measurements=[score, *_interval_measurements(hd, prediction, algorithm)],
        qualitative_evaluations=[severity],
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    groups = [group]
    if prediction.areas is not None:
        groups += _per_area_groups(hd, source, prediction, algorithm, uid)
    evidence = [source]
    if prior is not None:
        groups.append(_change_group(hd, source, prior, algorithm, uid))
        evidence.append(_prior_evidence(source, prior))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=code("SVDH-XR-HANDS", SCHEME, "Radiography of the hands"),
        imaging_measurements=groups,
    )
    structured_report = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=uid("sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uid("sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="svdh SvdH score",
        is_complete=True,
    )
    secondary_capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay_rgb, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uid("sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uid("sc"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        series_description="svdh Grad-CAM overlay",
    )
    secondary_capture.BurnedInAnnotation = "YES"
    # Hands are paired: General Series needs Laterality (empty when both hands are shown).
    side = str(source.get("ImageLaterality", "") or source.get("Laterality", "") or "")
    secondary_capture.Laterality = side if side in ("L", "R") else ""
    return DicomResults(structured_report, secondary_capture, dropped)


def _score(hd: object, value: float, concept: tuple[str, str], algorithm: object, **extra: object) -> object:
    return hd.sr.Measurement(
        name=hd.sr.CodedConcept(concept[0], SCHEME, concept[1]),
        value=float(round(value, 3)),
        unit=hd.sr.CodedConcept("{score}", "UCUM", "score"),
        algorithm_id=algorithm,
        **extra,
    )


# target -> (code stem, words); code values stay within SH's 16 characters
INTERVAL_NAMES = {
    "": ("HW", ""),
    "erosion": ("E", "erosion "),
    "narrowing": ("J", "narrowing "),
    "LH": ("LH", "left hand "),
    "RH": ("RH", "right hand "),
}


def _interval_measurements(hd: object, prediction: Prediction, algorithm: object, target: str = "") -> list:
    """The limits of a prediction interval (the total's, or a subtotal's ``target``), as two measurements
    (code meanings stay within DICOM's 64 characters)."""
    interval = prediction.interval if not target else prediction.subtotal_intervals.get(target)
    if interval is None:
        return []
    stem, words = INTERVAL_NAMES[target]
    code = f"SVDH-{stem}"
    what = f"SvdH {words}score, {interval.level:.0%} interval"
    return [
        _score(hd, interval.low, (f"{code}-LOW", f"{what}, lower limit"), algorithm),
        _score(hd, interval.high, (f"{code}-HIGH", f"{what}, upper limit"), algorithm),
    ]


KIND_CONCEPTS = {
    "E": ("SVDH-EROSION", "SvdH erosion grade"),
    "J": ("SVDH-JSN", "SvdH joint space narrowing grade"),
}
SUBTOTAL_CONCEPTS = {
    "areas_sum": ("SVDH-AREAS-SUM", "Sum of the SvdH area grades"),
    "erosion": ("SVDH-EROSION-SUM", "SvdH erosion score"),
    "narrowing": ("SVDH-JSN-SUM", "SvdH joint space narrowing score"),
    "LH": ("SVDH-LH", "SvdH score of the left hand and wrist"),
    "RH": ("SVDH-RH", "SvdH score of the right hand and wrist"),
}


def _per_area_groups(hd: object, source: object, prediction: Prediction, algorithm: object, uid: object) -> list:
    """The subtotals' group, then one planar-ROI group per area of the shown hands."""
    from .anatomy_codes import finding_site
    from .areas import AREAS

    reading = prediction.areas
    subtotals = reading.subtotals()
    measurements = []
    for key, concept in SUBTOTAL_CONCEPTS.items():
        value = subtotals.get(key)
        if value is None:
            continue
        measurements.append(_score(hd, value["total"] if isinstance(value, dict) else value, concept, algorithm))
        measurements += _interval_measurements(hd, prediction, algorithm, key) if key != "areas_sum" else []
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("subtotals"), identifier="SvdH subtotals"),
            measurements=measurements,
            algorithm_id=algorithm,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        )
    ]
    positions = reading.joints_image or {}
    region_source = hd.sr.SourceImageForRegion.from_source_image(source)
    for hand in reading.shown:
        for area in AREAS:
            column = area.column(hand)
            if column not in positions:
                continue
            x, y = positions[column]
            site = finding_site(hd, area.joint, hand)
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=uid(f"area-{column}"), identifier=column),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POINT,
                        graphic_data=np.array([[x, y]], dtype=np.float64),
                        source_image=region_source,
                    ),
                    finding_sites=[site],
                    measurements=[_score(hd, reading.grades[column], KIND_CONCEPTS[area.kind], algorithm)],
                    algorithm_id=algorithm,
                )
            )
    return groups


YES, NO = ("373066001", "SCT", "Yes"), ("373067005", "SCT", "No")


def _change_group(hd: object, source: object, prior: PriorChange, algorithm: object, uid: object) -> object:
    """The change since the prior: its value, interval limits, yearly rate and the progression flag, with the
    prior instance among the group's source images."""
    change = prior.change
    measurements = [_score(hd, change.total, ("SVDH-CHANGE", "Change of the SvdH score since the prior"), algorithm)]
    if change.interval is not None:
        what = f"Change since the prior, {change.interval.level:.0%} interval"
        measurements += [
            _score(hd, change.interval.low, ("SVDH-CHANGE-LOW", f"{what}, lower limit"), algorithm),
            _score(hd, change.interval.high, ("SVDH-CHANGE-HIGH", f"{what}, upper limit"), algorithm),
        ]
    if change.per_year is not None:
        measurements.append(
            hd.sr.Measurement(
                name=hd.sr.CodedConcept("SVDH-CHANGE-YEAR", SCHEME, "Change of the SvdH score per year"),
                value=float(round(change.per_year, 3)),
                unit=hd.sr.CodedConcept("{score}/a", "UCUM", "score per year"),
                algorithm_id=algorithm,
            )
        )
    evaluations = []
    if change.progressor is not None:
        answer = YES if change.progressor else NO
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=hd.sr.CodedConcept(
                    "SVDH-PROGRESSION", SCHEME, "Progression beyond the smallest detectable change"
                ),
                value=hd.sr.CodedConcept(*answer),
            )
        )
    prior_image = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=prior.sop_class_uid, referenced_sop_instance_uid=prior.sop_instance_uid
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid("change"), identifier=f"SvdH change ({prior.route})"),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source), prior_image],
    )


def _prior_evidence(source: object, prior: PriorChange) -> object:
    """The prior instance as SR evidence: its UIDs and the patient's (the same patient as ``source``)."""
    from pydicom.dataset import Dataset

    evidence = Dataset()
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        if keyword in source:
            setattr(evidence, keyword, source.get(keyword))
    evidence.StudyInstanceUID = prior.study_instance_uid
    evidence.SeriesInstanceUID = prior.series_instance_uid
    evidence.SOPClassUID = prior.sop_class_uid
    evidence.SOPInstanceUID = prior.sop_instance_uid
    return evidence


def write_dataset(dataset: object, path: Path) -> None:
    """Write a DICOM file atomically."""
    from .files import atomic_target

    with atomic_target(path) as partial:
        dataset.save_as(partial, enforce_file_format=True)


def write_dicom_results(
    source_path: Path,
    prediction: Prediction,
    overlay_rgb: np.ndarray,
    manifest: Manifest,
    model_sha256: str,
    files: tuple[Path, Path],
    prior: PriorChange | None = None,
) -> tuple[str, ...]:
    """Make the SR and the SC of one scored DICOM and write them (atomically) to ``files`` (SR, SC): the one
    path of batch runs and of the PACS node. Returns the keywords of source attributes left empty."""
    made = make_dicom_results(source_path, prediction, overlay_rgb, manifest, model_sha256, prior)
    write_dataset(made.structured_report, files[0])
    try:
        write_dataset(made.secondary_capture, files[1])
    except BaseException:
        files[0].unlink(missing_ok=True)  # both or neither: an SR whose overlay is missing is not kept
        raise
    return made.dropped
