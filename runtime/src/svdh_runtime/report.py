"""The JSON record of one scored (or refused) image. Contains no patient data."""

from __future__ import annotations

from typing import Any

from .bundle import Bundle
from .manifest import Manifest
from .scoring import ScoreResult
from .text import one_line


def result_record(result: ScoreResult, bundle: Bundle, backend: str, overlay: str | None = None) -> dict[str, Any]:
    """A JSON-ready dict: source, status, score, severity, model, backend, timings."""
    manifest = bundle.manifest
    record: dict[str, Any] = {"source": result.source, "status": result.status}
    if result.status != "ok" or result.prediction is None:
        record["reason"] = result.reason
    else:
        p = result.prediction
        record.update(
            score=round(p.score, 3),
            score_raw=round(p.score_raw, 3),
            score_range=[manifest.outputs.score_min, manifest.outputs.score_max],
            severity={
                "class": p.severity,
                "index": p.severity_index,
                "probabilities": {k: round(v, 5) for k, v in p.probabilities.items()},
                "probabilities_from": p.probabilities_source,
            },
        )
        if p.interval is not None:
            record["score_interval"] = p.interval.to_dict()
        if p.areas is not None:
            record.update(per_area_record(result))
    if result.ood_distance is not None:
        record["input_gate"] = {
            "distance": round(result.ood_distance, 4),
            "threshold": manifest.outputs.ood_threshold,
        }
    if result.prepared is not None and manifest.preprocessing.mm_per_pixel > 0:
        record["physical_scale"] = physical_scale(result, manifest)
    if result.image is not None and result.image.reduction:
        record["jpeg2000_resolution_level"] = result.image.reduction  # decoded at 1/2**level size
    if result.meta is not None and result.meta.sop_instance_uid:
        record["sop_instance_uid"] = result.meta.sop_instance_uid
    if result.meta is not None and result.meta.patient is not None:
        record["patient"] = result.meta.patient
    record["model"] = {"name": manifest.name, "version": manifest.version, "sha256": bundle.model_sha256}
    record["backend"] = backend
    if overlay:
        record["overlay"] = overlay
    if result.timings_ms:
        record["timings_ms"] = result.timings_ms
    return record


SCORE_NOTE = (
    "score is the model's total (its score head); the areas are graded by its joint head, and their sum "
    "(subtotals.areas_sum) can differ from the score"
)


def per_area_record(result: ScoreResult) -> dict[str, Any]:
    """The JSON of a joint head's reading: hands, areas, subtotals (with intervals) and joint positions."""
    p = result.prediction
    reading = p.areas
    subtotals = reading.subtotals()
    rounded: dict[str, Any] = {
        key: (None if value is None else {k: round(v, 3) for k, v in value.items()})
        if key in ("LH", "RH")
        else round(value, 3)
        for key, value in subtotals.items()
    }
    rounded["score_minus_areas_sum"] = round(p.score - subtotals["areas_sum"], 3)
    if p.subtotal_intervals:
        rounded["intervals"] = {target: i.to_dict() for target, i in p.subtotal_intervals.items()}
    hands: dict[str, Any] = {
        "shown": list(reading.shown),
        "probabilities": {hand: round(v, 4) for hand, v in reading.hand_probabilities.items()},
    }
    laterality = reading.laterality_check(result.meta.laterality if result.meta is not None else None)
    if laterality is not None:
        hands["dicom_laterality"] = laterality
    joints = reading.joints_image or {}
    return {
        "score_note": SCORE_NOTE,
        "hands": hands,
        "areas": {column: None if grade is None else round(grade, 3) for column, grade in reading.grades.items()},
        "subtotals": rounded,
        "joints": {column: [round(x, 1), round(y, 1)] for column, (x, y) in joints.items()},
    }


def physical_scale(result: ScoreResult, manifest: Manifest) -> dict[str, Any]:
    """How big the radiograph was drawn on the canvas, against the scale the model was trained at."""
    used = result.prepared.mm_per_pixel
    canonical = manifest.preprocessing.mm_per_pixel
    if used is None:
        return {"canonical_mm_per_pixel": canonical, "mm_per_pixel": None, "note": "pixel spacing unknown: fitted"}
    record = {"canonical_mm_per_pixel": canonical, "mm_per_pixel": round(used, 4)}
    if used > canonical * 1.01:
        record["note"] = "field larger than the canvas at the canonical scale: shrunk to fit"
    return record


def caption(result: ScoreResult, manifest: Manifest) -> str:
    """``SvdH 42.3 / 280, moderate (p=0.81)``, with the interval when the bundle is calibrated:
    ``SvdH 42.3 [31.0-55.8, 90%] / 280, moderate (p=0.81)``."""
    p = result.prediction
    shown = f"{p.score:.1f}"
    if p.interval is not None:
        shown += f" [{p.interval.low:.1f}-{p.interval.high:.1f}, {p.interval.level:.0%}]"
    return f"SvdH {shown} / {manifest.outputs.score_max:.0f}, {p.severity} (p={p.probabilities[p.severity]:.2f})"


def summary_line(result: ScoreResult, manifest: Manifest) -> str:
    """One human-readable line for the console (control characters in a file name escaped)."""
    if result.status != "ok" or result.prediction is None:
        return one_line(f"{result.source}: {result.status}: {result.reason}")
    return one_line(f"{result.source}: {caption(result, manifest)}")
