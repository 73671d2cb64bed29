"""Evaluate a bundle through the runtime (ONNX Runtime) on a labelled folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.manifest import MANIFEST_NAME
from svdh_runtime.scoring import Scorer

from .datasets import read_phantom_dir
from .metrics import evaluate_predictions


def evaluate_bundle(bundle_dir: Path | None, data: Path, progress: Callable = lambda it: it) -> dict:
    """Score every image of ``data`` with the bundle; return metrics (errors count as failures)."""
    bundle = load_bundle(bundle_dir)
    scorer = Scorer(bundle, create_backend("onnxruntime", bundle))
    samples = read_phantom_dir(Path(data))
    preds, truths, classes, failures = [], [], [], 0
    for sample in progress(samples):
        result = scorer.score_file(sample.path)
        if result.status != "ok":
            failures += 1
            continue
        preds.append(result.prediction.score)
        classes.append(result.prediction.severity_index)
        truths.append(sample.score)
    metrics = evaluate_predictions(
        np.array(preds), np.array(truths), np.array(classes), bundle.manifest.outputs.severity_classes
    )
    metrics["failures"] = failures
    return metrics


def record_metrics(bundle_dir: Path, key: str, metrics: dict) -> None:
    """Store ``metrics`` under ``manifest.metrics[key]`` (the manifest is not itself checksummed)."""
    bundle = load_bundle(bundle_dir)
    manifest = dataclasses.replace(bundle.manifest, metrics={**bundle.manifest.metrics, key: metrics})
    path = Path(bundle_dir) / MANIFEST_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(manifest.to_json(), encoding="utf-8")
    partial.replace(path)
