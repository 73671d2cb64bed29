"""Evaluate a bundle through the runtime (ONNX Runtime) on a labelled folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.areas import SUBTOTAL_MAX
from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.manifest import MANIFEST_NAME, Manifest, Preprocessing
from svdh_runtime.preprocess import cam_peak
from svdh_runtime.scoring import Scorer, ScoreResult

from .agreement import agreement_table
from .area_metrics import area_metrics
from .change_metrics import change_metrics, paired_measure, sitting_scores
from .datasets import read_dataset
from .intervals import coverage
from .metrics import evaluate_predictions, pearson, rmse
from .scored_set import ScoredSet, joint_table, score_samples


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
    joints = {name: record["joints"] for name, record in joint_table(data).items()}
    scored_set = score_samples(scorer, samples, progress)
    preds, truths, classes, hits, scored, beyond_gate = [], [], [], [], [], 0
    for sample, result in scored_set.scored:
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
    metrics["failures"] = scored_set.failures
    metrics["rejected"] = scored_set.rejected
    if ignore_gate and threshold > 0:
        metrics["gate_would_reject"] = int(beyond_gate)
    agreement = agreement_table(data, scored, preds, bootstrap) if data.is_dir() else []
    if agreement:
        metrics["agreement"] = agreement
    if hits:
        metrics["cam_pointing_game"] = {"images": len(hits), "hit_rate": round(float(np.mean(hits)), 4)}
    metrics |= _layouts(scored, preds, truths, bundle.manifest.outputs.severity_classes, classes, bootstrap)
    if bundle.manifest.outputs.per_area:
        metrics["score_vs_areas_sum"] = _score_and_areas_sum(scored_set)
        metrics["areas"] = area_metrics(scored_set.area_records(data), bootstrap)
    if bundle.manifest.outputs.intervals:
        metrics["intervals"] = interval_coverage(scored_set, bundle.manifest, bootstrap)
    if any(s.sitting is not None for s in samples):
        sittings = sitting_scores(scored_set, samples, data)
        outputs = bundle.manifest.outputs
        metrics["change"] = change_metrics(sittings, outputs.change_for("difference"), bootstrap=bootstrap)
        if bundle.manifest.outputs.paired is not None:
            from svdh_runtime.paired import PairedGraph

            measure = paired_measure(scored_set, PairedGraph(bundle))
            metrics["change_paired"] = change_metrics(
                sittings, outputs.change_for("paired"), bootstrap=bootstrap, measure=measure
            )
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


def _layouts(samples: list, preds: list, truths: list, severity_classes: tuple, classes: list, bootstrap: int) -> dict:
    """The score metrics of one-hand and two-hand images apart, when the set has both."""
    one_hand = np.array([s.area_grades is not None and not np.isfinite(s.area_grades).all() for s in samples])
    if not one_hand.any() or one_hand.all():
        return {}
    layouts = {}
    for name, keep in (("one_hand", one_hand), ("two_hands", ~one_hand)):
        layouts[name] = evaluate_predictions(
            np.array(preds)[keep],
            np.array(truths)[keep],
            np.array(classes)[keep],
            severity_classes,
            bootstrap=bootstrap,
        )
    return {"by_layout": layouts}


def _score_and_areas_sum(scored_set: ScoredSet) -> dict:
    """How far the score and the sum of the areas differ, and how good each is, on the scored images."""
    score = np.array([r.prediction.score for _, r in scored_set.scored])
    summed = np.array([r.prediction.areas.subtotals()["areas_sum"] for _, r in scored_set.scored])
    truth = np.array([s.score for s, _ in scored_set.scored])
    if not len(score):
        return {}
    return {
        "mean_abs_difference": round(float(np.abs(score - summed).mean()), 3),
        "p95_abs_difference": round(float(np.percentile(np.abs(score - summed), 95)), 3),
        "score_rmse": round(rmse(score, truth), 3),
        "areas_sum_rmse": round(rmse(summed, truth), 3),
        "score_pcc": round(pearson(score, truth), 4),
        "areas_sum_pcc": round(pearson(summed, truth), 4),
    }


def interval_coverage(scored_set: ScoredSet, manifest: Manifest, bootstrap: int, seed: int = 0) -> dict:
    """Coverage and mean width of the bundle's intervals (each calibrated target, at its level)."""
    result = {}
    for calibration in manifest.outputs.intervals:
        data = scored_set.calibration_data(calibration.target)
        if not len(data.truth):
            continue
        top = manifest.outputs.score_max if calibration.target == "total" else SUBTOTAL_MAX[calibration.target]
        figures = coverage(calibration, data, calibration.level, (0.0, top))
        if bootstrap and len(data.truth) > 1:
            rng = np.random.default_rng(seed)
            inside = np.array(figures.pop("inside"))
            draws = [inside[rng.integers(0, len(inside), len(inside))].mean() for _ in range(bootstrap)]
            figures["coverage_ci"] = [round(float(v), 4) for v in np.percentile(draws, [2.5, 97.5])]
        figures.pop("inside", None)
        result[calibration.target] = figures
    return result


def _peak_hits(result: ScoreResult, spec: Preprocessing, damaged: list[dict]) -> bool:
    """Pointing game: does the CAM's peak fall within the radius of a damaged joint?"""
    x, y = cam_peak(result.prediction.cam, spec, result.prepared.box, result.image.full_shape)
    return any(np.hypot(x - j["x"], y - j["y"]) <= j["radius"] for j in damaged)


def record_metrics(bundle_dir: Path, key: str, metrics: dict) -> None:
    """Store ``metrics`` under ``manifest.metrics[key]`` (the manifest is not itself checksummed)."""
    bundle = load_bundle(bundle_dir)
    manifest = dataclasses.replace(bundle.manifest, metrics={**bundle.manifest.metrics, key: metrics})
    manifest.write(Path(bundle_dir) / MANIFEST_NAME)
