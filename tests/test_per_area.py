"""The joint head: per-hand area grades, joints located, hands shown; in training, in the graph and in every
output (JSON, overlay, report, DICOM SR)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GRADED_COLUMNS, run_cli
from svdh_exporter.augment import augment_batch
from svdh_runtime.areas import AREAS, HANDS, SITES, grade_columns
from svdh_runtime.manifest import Preprocessing
from svdh_trainer.datasets import read_dataset
from svdh_trainer.joint_head import joint_targets, swap_hands

COLUMNS = grade_columns()
SPEC = Preprocessing(height=128, width=160, mm_per_pixel=2.0)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from svdh_trainer.phantom.generate import generate

    out = tmp_path_factory.mktemp("mixed")
    generate(out, 6, 5, workers=1, layout="mixed", realism=1)
    return out


def test_mixed_layout_has_both_kinds_of_image_and_the_same_patients(mixed: Path, tmp_path: Path) -> None:
    from svdh_trainer.phantom.generate import generate

    names = sorted(p.name for p in (mixed / "images").glob("*.dcm"))
    assert any(n.endswith("-LH.dcm") for n in names) and any(not n.endswith(("-LH.dcm", "-RH.dcm")) for n in names)
    generate(tmp_path, 6, 5, workers=1, layout="both", realism=1)
    assert (tmp_path / "labels.csv").read_text() == (mixed / "labels.csv").read_text()  # the same grades


def test_targets_put_each_hand_where_the_phantom_drew_it(mixed: Path) -> None:
    samples = read_dataset(mixed)
    targets = joint_targets(samples, SPEC)
    for sample, shown, sites in zip(samples, targets.shown, targets.sites):
        one_hand = sample.path.stem.endswith(("-LH", "-RH"))
        assert shown.sum() == (1 if one_hand else 2)
        if not one_hand:  # the patient's right hand lies on the image's left
            assert np.nanmean(sites[len(SITES) :, 0]) < 0.5 < np.nanmean(sites[: len(SITES), 0])
        for hand, seen in zip(range(len(HANDS)), shown):
            part = sites[hand * len(SITES) : (hand + 1) * len(SITES)]
            assert np.isfinite(part).all() == bool(seen) and np.isnan(part).all() == (not seen)


def test_a_flip_swaps_the_hands_and_moves_the_joints_with_the_pixels() -> None:
    image = torch.full((6, 1, SPEC.height, SPEC.width), (SPEC.pad_value - SPEC.mean) / SPEC.std)
    points = torch.tensor([[[0.3, 0.4]]] * 6)
    image[:, 0, 50:53, 47:50] = 5.0  # a bright spot around canvas (48, 51.2), i.e. (0.3, 0.4) of the canvas
    moved = augment_batch(image, SPEC, torch.Generator().manual_seed(4), points=points)
    assert moved.flipped.any() and not moved.flipped.all()
    for picture, point, flipped in zip(moved.images, moved.points, moved.flipped):
        row, col = np.unravel_index(int(picture[0].argmax()), picture[0].shape)
        x, y = float(point[0, 0]) * SPEC.width, float(point[0, 1]) * SPEC.height
        assert abs(col + 0.5 - x) < 4 and abs(row + 0.5 - y) < 4  # the joint moved where its pixels went
        assert (x > SPEC.width / 2) == bool(flipped)  # mirrored to the other side
    areas = torch.arange(6 * 62, dtype=torch.float32).reshape(6, 62)
    swapped = swap_hands(areas, moved.flipped)
    for before, after, flipped in zip(areas, swapped, moved.flipped):
        expected = torch.cat([before[31:], before[:31]]) if flipped else before
        assert torch.equal(after, expected)
    sites = torch.rand(6, 44, 2)
    assert torch.equal(swap_hands(swap_hands(sites, moved.flipped), moved.flipped), sites)


def test_exported_areas_hands_and_joints_equal_the_torch_model(per_area_bundle: Path) -> None:
    import onnxruntime as ort

    from svdh_exporter.checkpoint import load_network
    from svdh_exporter.model import CamGraph

    net, _ = load_network(per_area_bundle.parent / "checkpoint")
    with torch.no_grad():  # random weights in the head too, so the comparison is not of constants
        net.joint_head.grader_weight.normal_(0, 0.05)
        net.joint_head.hands.weight.normal_(0, 0.05)
    graph = CamGraph(net.eval())
    path = per_area_bundle.parent / "random-head.onnx"
    from svdh_exporter.onnx_export import export_onnx

    export_onnx(graph, torch.randn(2, 1, SPEC.height, SPEC.width), path, log=lambda _: None)
    images = np.random.default_rng(0).standard_normal((3, 1, SPEC.height, SPEC.width)).astype(np.float32)
    got = dict(zip(graph.output_names, ort.InferenceSession(str(path)).run(None, {"image": images})))
    with torch.no_grad():
        want = dict(zip(graph.output_names, (t.numpy() for t in graph(torch.from_numpy(images)))))
    assert got["areas"].shape == (3, 62) and got["joints"].shape == (3, 62, 2) and got["hands"].shape == (3, 2)
    assert np.abs(got["areas"] - want["areas"]).max() < 1e-4
    assert np.abs(got["hands"] - want["hands"]).max() < 1e-4
    assert np.abs(got["joints"] - want["joints"]).max() < 1e-2  # canvas pixels
    assert (want["joints"][..., 0] <= SPEC.width).all() and (want["joints"] >= 0).all()


def _run_json(bundle: Path, image: Path, *extra: str) -> dict:
    done = run_cli("svdh-run", str(image), "--model", str(bundle), "--json", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[0])


def test_json_reports_areas_subtotals_joints_and_says_which_is_the_score(per_area_bundle: Path, phantoms: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    record = _run_json(per_area_bundle, image)
    assert list(record["areas"]) == COLUMNS
    graded = [record["areas"][c] for i, c in enumerate(COLUMNS) if i in GRADED_COLUMNS]
    assert min(graded) >= 3 and max(v for i, v in enumerate(record["areas"].values()) if i not in GRADED_COLUMNS) < 0.1
    subtotals = record["subtotals"]
    assert subtotals["areas_sum"] == pytest.approx(sum(record["areas"].values()), abs=0.01)
    assert subtotals["LH"]["total"] + subtotals["RH"]["total"] == pytest.approx(subtotals["areas_sum"], abs=0.01)
    assert subtotals["erosion"] + subtotals["narrowing"] == pytest.approx(subtotals["areas_sum"], abs=0.01)
    assert subtotals["score_minus_areas_sum"] == pytest.approx(record["score"] - subtotals["areas_sum"], abs=0.01)
    assert "score head" in record["score_note"]
    assert record["hands"]["shown"] == ["LH", "RH"] and record["hands"]["dicom_laterality"]["agrees"]
    import pydicom

    rows, columns = (
        pydicom.dcmread(image, stop_before_pixels=True)[0x00280010].value,
        pydicom.dcmread(image, stop_before_pixels=True).Columns,
    )
    for x, y in record["joints"].values():  # source pixels, on the radiograph
        assert 0 <= x <= columns and 0 <= y <= rows
    assert record["severity"]["index"] == _bin(record["score"])


def _bin(score: float) -> int:
    from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, severity_index

    return severity_index(score, DEFAULT_SEVERITY_CLASSES)


def test_a_one_hand_reading_gives_nulls_for_the_other_hand(right_hand_bundle: Path, phantoms: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[0]  # a both-hands film: the DICOM header disagrees
    record = _run_json(right_hand_bundle, image)
    assert record["hands"]["shown"] == ["RH"]
    assert all(record["areas"][a.column("LH")] is None for a in AREAS)
    assert all(record["areas"][a.column("RH")] is not None for a in AREAS)
    assert record["subtotals"]["LH"] is None and record["subtotals"]["RH"]["total"] == pytest.approx(
        record["subtotals"]["areas_sum"], abs=0.01
    )
    assert all(c.startswith("RH") for c in record["joints"]) and len(record["joints"]) == len(AREAS)
    assert record["hands"]["dicom_laterality"] == {"dicom": "B", "agrees": False}


def test_overlay_labels_only_the_graded_areas(right_hand_bundle: Path, phantoms: Path) -> None:
    from svdh_runtime.bundle import load_bundle
    from svdh_runtime.overlay import joint_labels, render_overlay
    from svdh_runtime.scoring import Scorer

    bundle = load_bundle(right_hand_bundle)
    from svdh_runtime.backends import create_backend

    result = Scorer(bundle, create_backend("onnxruntime", bundle)).score_file(
        sorted((phantoms / "images").glob("*.dcm"))[0]
    )
    labels = joint_labels(result)
    graded = [c for i, c in enumerate(COLUMNS) if i in GRADED_COLUMNS and c.startswith("RH")]
    expected_joints = {next(a.joint for a in AREAS if a.column("RH") == c) for c in graded}
    assert len(labels) == len(expected_joints)  # one label per joint with a graded area, none for the others
    texts = " ".join(label.text for label in labels)
    assert texts.count("E") + texts.count("J") == len(graded)
    positions = result.prediction.areas.joints_image
    assert {(round(label.x, 3), round(label.y, 3)) for label in labels} <= {
        (round(x, 3), round(y, 3)) for x, y in positions.values()
    }
    picture = np.asarray(render_overlay(result, bundle.manifest))
    cyan = (picture[..., 0] < 60) & (picture[..., 1] > 200) & (picture[..., 2] > 200)
    assert cyan.sum() > 0  # the labels are drawn
    plain = np.asarray(
        render_overlay(
            type(result)(**{**result.__dict__, "prediction": _without_areas(result.prediction)}), bundle.manifest
        )
    )
    assert ((plain[..., 0] < 60) & (plain[..., 1] > 200) & (plain[..., 2] > 200)).sum() == 0


def _without_areas(prediction):  # noqa: ANN001, ANN202
    import dataclasses

    return dataclasses.replace(prediction, areas=None)


def test_report_html_has_a_per_joint_table(per_area_bundle: Path, phantoms: Path, tmp_path: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[1]
    done = run_cli("svdh-run", str(image), "--model", str(per_area_bundle), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<details><summary>per joint" in page and page.count("<tr><td>") >= len(AREAS) + 1
    assert "wrist_J__radcar" in page and "hand total" in page


@pytest.fixture(scope="module")
def sr_results(per_area_bundle: Path, phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    image = sorted((phantoms / "images").glob("*.dcm"))[2]
    out = tmp_path_factory.mktemp("per-area-sr")
    done = run_cli(
        "svdh-run", str(image), "--model", str(per_area_bundle), "--out", str(out), "--dicom-results", "--json"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return image, json.loads(done.stdout.splitlines()[0]), out / f"{image.stem}.sr.dcm"


def test_structured_report_has_a_group_per_area_that_highdicom_reads_back(sr_results: tuple) -> None:
    import highdicom as hd

    from svdh_runtime.anatomy_codes import SITE_CODES

    _, record, path = sr_results
    sr = hd.sr.srread(path)
    groups = sr.content.get_planar_roi_measurement_groups()
    by_area = {g.tracking_identifier: g for g in groups}
    assert set(by_area) == set(COLUMNS)  # both hands shown: 62 groups
    for column in COLUMNS:
        group = by_area[column]
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(record["areas"][column], abs=1e-3)
        (site,) = measurement.finding_sites if measurement.finding_sites else group.finding_sites
        area = next(a for a in AREAS if a.column(column[:2]) == column)
        assert site.value.value == SITE_CODES[area.joint][0]
        assert site.laterality.meaning == ("Left" if column.startswith("LH") else "Right")
        region = group.roi
        assert region is not None and region.GraphicType == "POINT"
        assert list(region.GraphicData) == pytest.approx(record["joints"][column], abs=0.1)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed here")
def test_structured_report_with_area_groups_passes_dciodvfy(sr_results: tuple) -> None:
    _, _, path = sr_results
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert "Error" not in checked.stdout + checked.stderr, (checked.stdout + checked.stderr)[-3000:]


def test_evaluate_reports_areas_layouts_and_the_score_beside_the_areas(
    per_area_bundle: Path, mixed: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "svdh-train", "evaluate", str(mixed), "--model", str(per_area_bundle), "--bootstrap", "20",
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout[done.stdout.index("{") :])
    samples = read_dataset(mixed)
    two_hands = sum(not s.path.stem.endswith(("-LH", "-RH")) for s in samples)
    areas = metrics["areas"]
    assert areas["images"] == len(samples)
    assert areas["hands_accuracy"] == pytest.approx(two_hands / len(samples), abs=1e-4)  # it always sees both
    assert len(areas["per_area"]) == len(AREAS) and "kappa_vs_exact" not in areas  # version-1 phantoms: no truth.csv
    assert areas["joint_error_median_mm"] > 0 and "mae_vs_reference_ci" in areas
    assert set(metrics["by_layout"]) == {"one_hand", "two_hands"}
    assert metrics["by_layout"]["two_hands"]["n"] == two_hands
    assert metrics["score_vs_areas_sum"]["mean_abs_difference"] > 0
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Areas" in report and "## By layout" in report and "wrist_J__radcar" in report


def test_weighted_area_rmse_counts_rare_grades_as_much_as_common_ones() -> None:
    from svdh_trainer.area_metrics import weighted_area_rmse

    reference = np.zeros((10, 62))
    reference[0, 0] = 5.0  # one grade-5 erosion among 160 zero erosion grades
    assert weighted_area_rmse(reference, reference) == 0.0
    wrong_rare = reference.copy()
    wrong_rare[0, 0] = 0.0  # the rare grade missed by 5
    wrong_common = reference.copy()
    wrong_common[1, 1] = 5.0  # one common zero off by 5
    assert weighted_area_rmse(wrong_rare, reference) > 5 * weighted_area_rmse(wrong_common, reference)
