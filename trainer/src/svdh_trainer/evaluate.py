"""Evaluate a bundle through the runtime (ONNX Runtime) on a labelled folder."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.manifest import MANIFEST_NAME, Preprocessing
from svdh_runtime.preprocess import cam_peak
from svdh_runtime.scoring import Scorer, ScoreResult

from .agreement import agreement_table
from .datasets import read_dataset
from .metrics import evaluate_predictions


def evaluate_bundle(
    bundle_dir: Path | None,
    data: Path,
    progress: Callable = lambda it: it,
    bootstrap: int = 1000,
    report_dir: Path | None = None,
    ignore_gate: bool = False,
) -> dict:
    """Score every image of ``data`` with the bundle; return metrics over the scored images.

    Unreadable images count as ``failures``, images the input gate turned away as ``rejected``. Where the
    folder holds each reader's grades (``readers.csv``), ``agreement`` sets the model beside the readers.

    With ``report_dir``, also write a Markdown report with a scatter plot and a confusion matrix.
    ``ignore_gate``: score the images the gate would turn away too (counted as ``gate_would_reject``).
    """
    bundle = load_bundle(bundle_dir)
    threshold = bundle.manifest.outputs.ood_threshold
    if ignore_gate:
        outputs = dataclasses.replace(bundle.manifest.outputs, ood_threshold=0.0)
        bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, outputs=outputs))
    scorer = Scorer(bundle, create_backend("onnxruntime", bundle))
    data = Path(data)
    samples = read_dataset(data)
    joints = _joint_sites(data) if data.is_dir() else {}
    preds, truths, classes, hits, failures, rejected, scored, beyond_gate = [], [], [], [], 0, 0, [], 0
    for sample in progress(samples):
        result = scorer.score_file(sample.path)
        if result.status != "ok":
            rejected += result.status == "rejected"
            failures += result.status != "rejected"
            continue
        preds.append(result.prediction.score)
        scored.append(sample)
        beyond_gate += ignore_gate and threshold > 0 and not (result.ood_distance or 0.0) <= threshold
        classes.append(result.prediction.severity_index)
        truths.append(sample.score)
        damaged = [j for j in joints.get(sample.path.relative_to(data).as_posix(), []) if j["grade"] > 0]
        if damaged:
            hits.append(_peak_hits(result, bundle.manifest.preprocessing, damaged))
    metrics = evaluate_predictions(
        np.array(preds),
        np.array(truths),
        np.array(classes),
        bundle.manifest.outputs.severity_classes,
        bootstrap=bootstrap,
    )
    metrics["failures"] = failures
    metrics["rejected"] = rejected
    if ignore_gate and threshold > 0:
        metrics["gate_would_reject"] = int(beyond_gate)
    agreement = agreement_table(data, scored, preds, bootstrap) if data.is_dir() else []
    if agreement:
        metrics["agreement"] = agreement
    if hits:
        metrics["cam_pointing_game"] = {"images": len(hits), "hit_rate": round(float(np.mean(hits)), 4)}
    if report_dir is not None:
        from .report import write_report

        write_report(
            Path(report_dir),
            np.array(preds),
            np.array(truths),
            np.array(classes),
            bundle.manifest.outputs.severity_classes,
            metrics,
            f"{bundle.manifest.name} {bundle.manifest.version} on {data.name}",
        )
    return metrics


def _joint_sites(data: Path) -> dict[str, list[dict]]:
    """Joint centres per image from a phantom folder's joints.json (empty for other data)."""
    path = data / "joints.json"
    if not path.is_file():
        return {}
    return {name: record["joints"] for name, record in json.loads(path.read_text(encoding="utf-8")).items()}


def _peak_hits(result: ScoreResult, spec: Preprocessing, damaged: list[dict]) -> bool:
    """Pointing game: does the CAM's peak fall within the radius of a damaged joint?"""
    x, y = cam_peak(result.prediction.cam, spec, result.prepared.box, result.image.full_shape)
    return any(np.hypot(x - j["x"], y - j["y"]) <= j["radius"] for j in damaged)


def record_metrics(bundle_dir: Path, key: str, metrics: dict) -> None:
    """Store ``metrics`` under ``manifest.metrics[key]`` (the manifest is not itself checksummed)."""
    bundle = load_bundle(bundle_dir)
    manifest = dataclasses.replace(bundle.manifest, metrics={**bundle.manifest.metrics, key: metrics})
    manifest.write(Path(bundle_dir) / MANIFEST_NAME)
