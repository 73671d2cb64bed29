"""Conformal prediction intervals, and severity derived from the score's predictive distribution."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from svdh_runtime.bundle import load_bundle
from svdh_runtime.errors import BundleError
from svdh_runtime.intervals import interval, severity_probabilities
from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, IntervalCalibration, Manifest, severity_index
from svdh_runtime.scoring import interpret
from svdh_trainer.intervals import CalibrationData, coverage, fit_interval


def _heteroscedastic(n: int, seed: int) -> CalibrationData:
    """A problem with known noise: the error grows with the score (sd 1.5 + 0.12 * score)."""
    rng = np.random.default_rng(seed)
    estimate = rng.gamma(1.2, 30.0, n).clip(0, 280)
    truth = estimate + rng.standard_normal(n) * (1.5 + 0.12 * estimate)
    return CalibrationData(estimate, np.zeros(n), truth, np.arange(n))


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_coverage_on_a_problem_with_known_noise_is_the_level(level: float) -> None:
    calibration = fit_interval("total", _heteroscedastic(1200, 1), seed=0, level=level)
    measured = coverage(calibration, _heteroscedastic(20000, 2), level, (-1e9, 1e9))
    assert abs(measured["coverage"] - level) <= 0.03


def test_intervals_adapt_to_difficulty() -> None:
    calibration = fit_interval("total", _heteroscedastic(1200, 1))
    narrow = interval(calibration, 2.0, 0.0, 0.9, (0, 280))
    wide = interval(calibration, 150.0, 0.0, 0.9, (0, 280))
    assert (wide.high - wide.low) > 4 * (narrow.high - narrow.low)  # a normal hand narrow, a destroyed one wide
    assert narrow.low >= 0 and narrow.low <= 2.0 <= narrow.high


def test_the_disagreement_of_the_heads_widens_the_interval_when_it_predicts_the_error() -> None:
    rng = np.random.default_rng(3)
    estimate = rng.uniform(0, 100, 2000)
    disagreement = rng.exponential(5.0, 2000)
    truth = estimate + rng.standard_normal(2000) * (1.0 + disagreement)
    calibration = fit_interval("total", CalibrationData(estimate, disagreement, truth, np.arange(2000)))
    assert calibration.per_disagreement > 0.5
    assert interval(calibration, 50, 20, 0.9, (0, 280)).high > interval(calibration, 50, 0, 0.9, (0, 280)).high


def test_too_few_residuals_for_the_level_give_an_unbounded_interval() -> None:
    calibration = fit_interval("total", _heteroscedastic(40, 1))  # 20 residuals
    assert calibration.quantile(0.99) == float("inf")
    wide = interval(calibration, 50, 0, 0.99, (0, 280))
    assert (wide.low, wide.high) == (0, 280)


def _calibration(**changes: object) -> dict:
    good = dataclasses.asdict(fit_interval("total", _heteroscedastic(200, 1)))
    return {**good, **changes}


def test_manifest_keeps_intervals_and_refuses_bad_ones(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    data["outputs"]["intervals"] = [_calibration()]
    manifest = Manifest.from_dict(data)
    assert manifest.outputs.interval_for("total").scores == tuple(_calibration()["scores"])
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    for bad, said in [
        ({"scores": [0.1, 0.2]}, "at least 10"),
        ({"scores": list(reversed(_calibration()["scores"]))}, "sorted"),
        ({"base": 0.0}, "base > 0"),
        ({"level": 1.5}, "between 0 and 1"),
        ({"target": "elbow"}, "interval target"),
        ({"scores": ["a"] * 20}, "finite non-negative numbers"),
    ]:
        data["outputs"]["intervals"] = [_calibration(**bad)]
        with pytest.raises(BundleError, match=said):
            Manifest.from_dict(data)
    data["outputs"]["intervals"] = [_calibration(target="erosion")]
    with pytest.raises(BundleError, match="need per-area outputs"):
        Manifest.from_dict(data)


def test_severity_is_always_the_bin_of_the_score(bundle: Path) -> None:
    manifest = load_bundle(bundle).manifest
    calibrated = dataclasses.replace(
        manifest,
        outputs=dataclasses.replace(manifest.outputs, intervals=(IntervalCalibration(**_calibration()),)),
    )
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(-20, 300, 400), [0.0, 4.999, 5.0, 30.0, 79.99, 80.0, 280.0]])
    probs = rng.dirichlet(np.ones(4), len(scores)).astype(np.float32)
    probs[:, 0] += 5  # a severity head that says "none" whatever the score: the case seen on a real radiograph
    outputs = {"score": scores.astype(np.float32), "severity_probs": probs, "cam": np.zeros((len(scores), 3, 4))}
    for bundle_manifest in (manifest, calibrated):
        for score, prediction in zip(scores, interpret(outputs, bundle_manifest)):
            assert prediction.score == pytest.approx(float(np.clip(score, 0, 280)), abs=1e-3)
            assert prediction.severity_index == severity_index(prediction.score, DEFAULT_SEVERITY_CLASSES)
            assert prediction.severity == DEFAULT_SEVERITY_CLASSES[prediction.severity_index].name
    for prediction in interpret(outputs, calibrated):
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.probabilities_source == "score distribution"
        assert prediction.interval.low <= prediction.score <= prediction.interval.high


def test_severity_probabilities_follow_the_predictive_distribution() -> None:
    calibration = fit_interval("total", _heteroscedastic(1200, 1))
    deep = severity_probabilities(calibration, 200.0, 0.0, DEFAULT_SEVERITY_CLASSES, (0, 280))
    assert deep[-1] > 0.95  # far inside "severe"
    edge = severity_probabilities(calibration, 30.0, 0.0, DEFAULT_SEVERITY_CLASSES, (0, 280))
    assert 0.3 < edge[1] < 0.7 and 0.3 < edge[2] < 0.7  # on the mild/moderate border: split


def test_calibrate_refuses_too_few_images_and_records_what_it_fitted(
    per_area_bundle: Path, tmp_path: Path, phantoms: Path
) -> None:
    import shutil

    from svdh_trainer.phantom.generate import generate

    target = tmp_path / "bundle"
    shutil.copytree(per_area_bundle, target)
    done = run_cli("svdh-train", "calibrate", str(phantoms), "--model", str(target))
    assert done.returncode == 2 and "at least 40" in done.stderr, done.stderr[-2000:]
    data = tmp_path / "calibration"
    generate(data, 30, 17, workers=1, layout="mixed", realism=1)
    done = run_cli("svdh-train", "calibrate", str(data), "--model", str(target), "--level", "0.8")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = load_bundle(target).manifest  # still verifies: the model file is unchanged
    assert {c.target for c in manifest.outputs.intervals} >= {"total", "erosion", "narrowing"}
    assert manifest.outputs.interval_for("total").level == 0.8
    assert manifest.metrics["interval_calibration"]["images_scored"] >= 40
    image = sorted((data / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(image), "--model", str(target), "--json", "--interval-level", "0.95")
    record = json.loads(done.stdout.splitlines()[0])
    assert record["score_interval"]["level"] == 0.95
    assert record["score_interval"]["low"] <= record["score"] <= record["score_interval"]["high"]
    assert record["severity"]["probabilities_from"] == "score distribution"
    assert set(record["subtotals"]["intervals"]) >= {"erosion", "narrowing"}
    out = tmp_path / "results"
    done = run_cli("svdh-run", str(image), "--model", str(target), "--out", str(out), "--dicom-results")
    assert done.returncode == 0, done.stderr[-2000:]
    import pydicom

    def codes(item: pydicom.Dataset) -> list[str]:
        found = []
        for child in getattr(item, "ContentSequence", []):
            found += [child.ConceptNameCodeSequence[0].get("CodeValue", ""), *codes(child)]
        return found

    in_report = codes(pydicom.dcmread(out / f"{image.stem}.sr.dcm"))
    assert {"SVDH-HW-LOW", "SVDH-HW-HIGH", "SVDH-E-LOW", "SVDH-J-HIGH"} <= set(in_report)
    assert "" not in in_report  # every code value fits in CodeValue (SH, 16 characters)
