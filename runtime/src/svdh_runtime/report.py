"""The JSON record of one scored (or refused) image. Contains no patient data."""

from __future__ import annotations

from typing import Any

from .bundle import Bundle
from .scoring import ScoreResult


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
            },
        )
    if result.meta is not None and result.meta.sop_instance_uid:
        record["sop_instance_uid"] = result.meta.sop_instance_uid
    record["model"] = {"name": manifest.name, "version": manifest.version, "sha256": bundle.model_sha256}
    record["backend"] = backend
    if overlay:
        record["overlay"] = overlay
    if result.timings_ms:
        record["timings_ms"] = result.timings_ms
    return record


def summary_line(result: ScoreResult) -> str:
    """One human-readable line for the console."""
    if result.status != "ok" or result.prediction is None:
        return f"{result.source}: {result.status}: {result.reason}"
    p = result.prediction
    confidence = p.probabilities[p.severity]
    return f"{result.source}: SvdH {p.score:.1f} / 280, {p.severity} (p={confidence:.2f})"
