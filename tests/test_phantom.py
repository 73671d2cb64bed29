"""Phantom generator: layout, labels, DICOM tags, determinism, visible lesions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom

from svdh_runtime.areas import AREAS, EROSION_AREAS, NARROWING_AREAS, TOTAL_MAX, grade_columns
from svdh_trainer.phantom.anatomy import Pose, build_hand
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.grades import draw_patient
from svdh_trainer.phantom.render import path_lengths


def test_areas_match_the_svdh_method() -> None:
    assert len(EROSION_AREAS) == 16 and len(NARROWING_AREAS) == 15
    assert TOTAL_MAX == 280
    assert len(grade_columns()) == 62 and "LH_mcp_E__1" in grade_columns() and "RH_wrist_J__radcar" in grade_columns()


def test_labels_and_dicom_tags(phantoms: Path) -> None:
    rows = list(csv.DictReader((phantoms / "labels.csv").open()))
    assert len(rows) == 16
    for row in rows:
        grades = [int(row[c]) for c in grade_columns()]
        erosion = sum(int(row[a.column(h)]) for h in ("LH", "RH") for a in AREAS if a.kind == "E")
        assert int(row["Overall_Tol"]) == sum(grades) and int(row["Overall_erosion"]) == erosion
        ds = pydicom.dcmread(phantoms / "images" / f"{row['Patient_ID']}.dcm")
        assert ds.PatientID == row["Patient_ID"]
        assert ds.Modality in ("DX", "CR") and ds.BodyPartExamined == "HAND"
        assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
        assert 10 <= ds.BitsStored <= 16 and int(ds.pixel_array.max()) < (1 << ds.BitsStored)
        assert float(ds.ImagerPixelSpacing[0]) > 0 and ds.ImageLaterality == "B"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID


def test_joint_centres_lie_inside_their_image(phantoms: Path) -> None:
    joints = json.loads((phantoms / "joints.json").read_text())
    assert len(joints) == 16
    for record in joints.values():
        assert len(record["joints"]) == 62
        for joint in record["joints"]:
            assert 0 <= joint["x"] < record["columns"] and 0 <= joint["y"] < record["rows"]


def test_same_seed_gives_the_same_dataset_with_any_worker_count(tmp_path: Path) -> None:
    generate(tmp_path / "a", 3, 5, workers=1)
    generate(tmp_path / "b", 3, 5, workers=2)
    generate(tmp_path / "c", 3, 6, workers=1)
    assert (tmp_path / "a/labels.csv").read_bytes() == (tmp_path / "b/labels.csv").read_bytes()
    for name in ("S5-00000.dcm", "S5-00002.dcm"):
        a, b = (pydicom.dcmread(tmp_path / d / "images" / name) for d in "ab")
        assert a.PixelData == b.PixelData and a.SOPInstanceUID == b.SOPInstanceUID
    assert (tmp_path / "a/labels.csv").read_text().splitlines()[1:] != (
        tmp_path / "c/labels.csv"
    ).read_text().splitlines()[1:]


def test_single_layout_writes_one_image_per_hand(tmp_path: Path) -> None:
    generate(tmp_path, 2, 3, layout="single", preset="shifted", workers=1)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["S3-00000-LH.dcm", "S3-00000-RH.dcm", "S3-00001-LH.dcm", "S3-00001-RH.dcm"]
    assert pydicom.dcmread(tmp_path / "images" / names[0]).ImageLaterality == "L"


def test_totals_are_skewed_like_a_cohort() -> None:
    rng = np.random.default_rng(0)
    totals = np.array([draw_patient(rng).totals()[0] for _ in range(2000)])
    assert totals.min() >= 0 and totals.max() <= 280
    assert np.median(totals) < totals.mean()  # long tail
    assert (totals < 5).mean() > 0.2 and (totals > 150).mean() > 0.03


def _render(erosion: dict, narrowing: dict) -> tuple[np.ndarray, dict]:
    hand = build_hand(erosion, narrowing, np.random.default_rng(0)).transformed(Pose(offset=(80.0, 212.0)))
    return path_lengths([hand], [], (1250, 800), 0.2), hand.sites


def test_erosions_change_the_image_at_their_joint_only() -> None:
    healthy, sites = _render({}, {})
    for joint, grade in (("mcp2", 4), ("pip4", 2), ("lunate", 5), ("ulna", 3)):
        damaged, _ = _render({joint: grade}, {})
        diff = np.abs(damaged - healthy)
        assert diff.max() > 1.0, f"{joint}: lesion not visible"
        rows, cols = np.nonzero(diff > 0.2 * diff.max())
        centre = sites[joint].centre / 0.2
        distance = np.hypot(cols - centre[0], rows - centre[1])
        assert np.median(distance) < 3 * sites[joint].radius / 0.2, f"{joint}: change is not at the joint"


def test_narrowing_reduces_the_joint_space() -> None:
    _, sites = _render({}, {})
    normal, _ = _render({}, {})
    narrowed, _ = _render({}, {"mcp3": 3})
    c = sites["mcp3"].centre / 0.2
    window = (slice(int(c[1]) - 3, int(c[1]) + 4), slice(int(c[0]) - 3, int(c[0]) + 4))
    assert narrowed[window].mean() > normal[window].mean() * 1.2  # bone fills the former gap
