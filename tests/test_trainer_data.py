"""Dataset reading, patient-level splits and recipes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from svdh_trainer.config import config_from_dict
from svdh_trainer.datasets import DatasetError, patient_split, read_phantom_dir


def _copy_with(phantoms: Path, tmp_path: Path, edit) -> Path:  # noqa: ANN001
    rows = list(csv.DictReader((phantoms / "labels.csv").open()))
    fields = list(rows[0])
    fields, rows = edit(fields, rows)
    (tmp_path / "images").symlink_to(phantoms / "images")
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def test_reads_targets_from_the_grade_columns(phantoms: Path) -> None:
    samples = read_phantom_dir(phantoms)
    rows = {r["Patient_ID"]: r for r in csv.DictReader((phantoms / "labels.csv").open())}
    assert len(samples) == 16
    assert all(s.score == float(rows[s.patient_id]["Overall_Tol"]) for s in samples)


def test_missing_column_is_named(phantoms: Path, tmp_path: Path) -> None:
    folder = _copy_with(phantoms, tmp_path, lambda f, r: ([c for c in f if c != "LH_mcp_E__3"], r))
    with pytest.raises(DatasetError, match="missing column LH_mcp_E__3"):
        read_phantom_dir(folder)


def test_out_of_range_grade_is_refused(phantoms: Path, tmp_path: Path) -> None:
    def edit(fields, rows):  # noqa: ANN001, ANN202
        rows[2]["RH_pip_J__4"] = "7"
        return fields, rows

    with pytest.raises(DatasetError, match=r"labels.csv:4: RH_pip_J__4=7 is outside 0-4"):
        read_phantom_dir(_copy_with(phantoms, tmp_path, edit))


def test_missing_image_is_named(phantoms: Path, tmp_path: Path) -> None:
    def edit(fields, rows):  # noqa: ANN001, ANN202
        rows[0]["Patient_ID"] = "NOBODY"
        return fields, rows

    with pytest.raises(DatasetError, match="no image for patient NOBODY"):
        read_phantom_dir(_copy_with(phantoms, tmp_path, edit))


def test_split_keeps_each_patient_on_one_side(tmp_path: Path) -> None:
    from svdh_trainer.datasets import Sample

    samples = [Sample(tmp_path / f"{p}-{h}.dcm", f"P{p}", 1.0) for p in range(20) for h in ("LH", "RH")]
    train, val = patient_split(samples, 0.25, seed=1)
    assert len(val) == 10 and len(train) == 30
    assert not {s.patient_id for s in train} & {s.patient_id for s in val}


def test_recipe_rejects_unknown_keys() -> None:
    with pytest.raises(DatasetError, match=r"unknown field\(s\) in \[train\]: epochz"):
        config_from_dict({"data": {"train": "x"}, "train": {"epochz": 3}})
    with pytest.raises(DatasetError, match=r"recipe: preprocessing.std must be > 0"):
        config_from_dict({"data": {"train": "x"}, "input": {"height": 64, "width": 64, "std": 0}})


def test_metrics_known_values_and_bootstrap_intervals() -> None:
    import numpy as np

    from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES
    from svdh_trainer.metrics import evaluate_predictions, quadratic_weighted_kappa

    assert quadratic_weighted_kappa(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), 4) == 1.0
    assert quadratic_weighted_kappa(np.array([3, 2, 1, 0]), np.array([0, 1, 2, 3]), 4) == -1.0
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 200, 300)
    pred = true + rng.normal(0, 10, 300)
    classes = np.array([[0, 5, 30, 80].__len__() - 1 - sum(p < b for b in (5, 30, 80)) for p in pred])
    metrics = evaluate_predictions(pred, true, classes, DEFAULT_SEVERITY_CLASSES, bootstrap=200)
    assert abs(metrics["rmse"] - 10) < 1.5 and metrics["pcc"] > 0.98
    low, high = metrics["rmse_ci"]
    assert low < metrics["rmse"] < high and high - low < 3
    assert metrics["severity_within_one"] >= metrics["severity_accuracy"]


def test_evaluation_report_has_plots_and_one_row_per_image(phantoms: Path, tmp_path: Path) -> None:
    from svdh_trainer.evaluate import evaluate_bundle

    metrics = evaluate_bundle(None, phantoms, bootstrap=50, report_dir=tmp_path / "report")
    assert metrics["n"] == 16 and metrics["failures"] == 0 and "rmse_ci" in metrics
    for name in ("scatter.png", "confusion.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "report" / "predictions.csv").read_text().splitlines()) == 17
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| pcc | {metrics['pcc']} |" in report and "![predicted vs true](scatter.png)" in report
