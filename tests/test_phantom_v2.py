"""Version-2 phantoms: people, clinics and readers; version 1 kept byte for byte."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from svdh_runtime.areas import AREAS, HANDS, grade_columns
from svdh_runtime.imageio import read_image
from svdh_trainer.phantom.anatomy import Pose, build_hand
from svdh_trainer.phantom.clinic import ClinicRanges
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.morphology import Morphology, Realism
from svdh_trainer.phantom.readers import READERS, ReaderProfile, read_grade
from svdh_trainer.phantom.render import path_lengths

# SHA-256 of images, labels.csv and joints.json of generate(OUT, 3, 5, ...) as version 1 wrote them
# (computed with the generator before version 2 existed). numpy picks its transcendental functions by the
# CPU's vector extensions, and their last bits differ, so the bytes are recorded per class of CPU: both
# were made by the version-1 code (commit 82f57c1~1) on a machine of that class.
VERSION_1 = {
    "avx512": {
        ("both", "default"): "f22ecb13cb8e0692910c40a1ca31f1be2a9484091f5edcba280309eaa62913f7",
        ("single", "shifted"): "e781cce1273e7a2dc1a8306ec8f754de9383fcf4b9f310479574ff507f5bf2c2",
    },
    "avx2": {
        ("both", "default"): "1541faa3e5f0b7e45b034d502e3672f58bf64a42cf77e895ec4f90aa570fd506",
        ("single", "shifted"): "526ed3ae3ee465e65020f167bece8c3367895aea7cf9019ac10666bb03baddcf",
    },
}


def _cpu_class() -> str | None:
    """The class of numpy's vector code on this CPU: avx512, avx2, or None (no digest recorded)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return None
    if features.get("AVX512_SKX") or features.get("X86_V4"):
        return "avx512"
    return "avx2" if features.get("AVX2") and features.get("FMA3") else None


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for image in sorted((folder / "images").iterdir()):
        digest.update(image.name.encode())
        digest.update(image.read_bytes())
    for name in ("labels.csv", "joints.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("v2")
    generate(folder, 8, 21, workers=1)
    return folder


@pytest.mark.parametrize(("layout", "preset"), list(VERSION_1["avx2"]))
def test_realism_1_reproduces_the_version_1_bytes(layout: str, preset: str, tmp_path: Path) -> None:
    cpu = _cpu_class()
    if cpu is None:
        pytest.skip("no version-1 digest is recorded for this CPU's vector extensions")
    generate(tmp_path, 3, 5, layout=layout, preset=preset, workers=1, realism=1)
    assert _digest(tmp_path) == VERSION_1[cpu][(layout, preset)]
    assert not (tmp_path / "truth.csv").exists() and not (tmp_path / "readers.csv").exists()


def test_version_2_is_the_same_with_any_worker_count(tmp_path: Path) -> None:
    generate(tmp_path / "a", 4, 9, workers=1)
    generate(tmp_path / "b", 4, 9, workers=2)
    for name in ("labels.csv", "truth.csv", "readers.csv", "joints.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for image in (tmp_path / "a" / "images").iterdir():
        assert image.read_bytes() == (tmp_path / "b" / "images" / image.name).read_bytes()


def test_the_same_seed_draws_the_same_patients_in_both_versions(realistic: Path, tmp_path: Path) -> None:
    generate(tmp_path, 8, 21, workers=1, realism=1)
    exact_v1 = _rows(tmp_path / "labels.csv")
    truth_v2 = {r["Patient_ID"]: r for r in _rows(realistic / "truth.csv")}
    changed = 0
    for row in exact_v1:  # the same grades, except where version 2 fused a carpus (scored at the maximum)
        other = truth_v2[row["Patient_ID"]]
        changed += any(row[c] != other[c] for c in grade_columns() if "wrist" not in c)
    assert changed == 0


def test_labels_are_the_readers_mean_and_readers_differ_from_the_truth(realistic: Path) -> None:
    labels = {r["Patient_ID"]: r for r in _rows(realistic / "labels.csv")}
    truth = {r["Patient_ID"]: r for r in _rows(realistic / "truth.csv")}
    readers = _rows(realistic / "readers.csv")
    assert sorted({r["Reader"] for r in readers}) == [p.name for p in READERS] and len(readers) == 2 * len(labels)
    differ = 0
    for patient, row in labels.items():
        read = [r for r in readers if r["Patient_ID"] == patient]
        for column in grade_columns():
            assert float(row[column]) == np.mean([float(r[column]) for r in read])
            differ += any(r[column] != truth[patient][column] for r in read)
        assert float(row["Overall_Tol"]) == pytest.approx(sum(float(row[c]) for c in grade_columns()))
        assert int(truth[patient]["Overall_Tol"]) == sum(int(truth[patient][c]) for c in grade_columns())
    assert differ > 0, "readers are not the truth"


@pytest.mark.parametrize("kind", ["miss", "border", "false_positive", "lean"])
def test_reader_departures_happen_at_their_configured_rates(kind: str) -> None:
    profile = ReaderProfile("T", miss_small_erosion=0.3, border=0.25, narrowing_lean=0.2, false_positive=0.05, mood=0.0)
    rng = np.random.default_rng(0)
    n = 20000
    if kind == "miss":
        rate = np.mean([read_grade(1, "E", 5, profile, 0.0, rng) == 0 for _ in range(n)])
        expected = 0.3 + 0.7 * 0.25 * 0.8 * 0.5  # missed, or not missed but read one grade down at the border
    elif kind == "border":  # grade 3 erosion: border * (0.6 + 0.2 * 3)
        rate = np.mean([read_grade(3, "E", 5, profile, 0.0, rng) != 3 for _ in range(n)])
        expected = 0.25 * 1.2
    elif kind == "false_positive":
        rate = np.mean([read_grade(0, "J", 4, profile, 0.0, rng) == 1 for _ in range(n)])
        expected = 0.05
    else:  # narrowing lean at grade 2, no border moves
        quiet = replace(profile, border=0.0)
        rate = np.mean([read_grade(2, "J", 4, quiet, 0.0, rng) == 3 for _ in range(n)])
        expected = 0.2
    assert abs(rate - expected) < 0.015, (kind, rate, expected)


def _hand_paths(morph: Morphology, erosion: dict | None = None) -> tuple[np.ndarray, dict]:
    hand = build_hand(erosion or {}, {}, np.random.default_rng(0), morph).transformed(Pose(offset=(80.0, 212.0)))
    return path_lengths([hand], [], (1250, 800), 0.2), hand


def test_dip_osteoarthritis_changes_the_dips_only_and_no_label(tmp_path: Path) -> None:
    base = Morphology(sesamoids=False)
    plain, hand = _hand_paths(base)
    arthritic, with_oa = _hand_paths(replace(base, dip_oa=(0.0, 0.7, 0.7, 0.7, 0.7)))
    assert [f for f in with_oa.features if f.startswith("dip_oa")] == ["dip_oa:2", "dip_oa:3", "dip_oa:4", "dip_oa:5"]
    rows, cols = np.nonzero(np.abs(arthritic - plain) > 0.2)
    assert len(rows)
    scored = [hand.sites[a.joint].centre / 0.2 for a in AREAS]
    dips = [hand.sites[f"dip{d}"].centre / 0.2 for d in range(2, 6)]
    nearest_dip = np.min([np.hypot(cols - c[0], rows - c[1]) for c in dips], axis=0)
    nearest_scored = np.min([np.hypot(cols - c[0], rows - c[1]) for c in scored], axis=0)
    assert np.mean(nearest_dip < nearest_scored) > 0.9, "the change is at the DIP joints"
    # a whole data set with osteoarthritis in most hands has the very same labels
    generate(tmp_path / "none", 3, 4, workers=1, features=Realism(dip_oa_by_age=(200.0, 1.0)))
    generate(tmp_path / "most", 3, 4, workers=1, features=Realism(dip_oa_by_age=(-1000.0, 1.0)))
    for name in ("truth.csv", "labels.csv"):
        assert (tmp_path / "none" / name).read_bytes() == (tmp_path / "most" / name).read_bytes()
    features = json.loads((tmp_path / "most" / "joints.json").read_text())
    assert any("dip_oa" in f for record in features.values() for f in record["features"])
    assert not any(
        "dip_oa" in f
        for r in json.loads((tmp_path / "none" / "joints.json").read_text()).values()
        for f in r["features"]
    )


def test_hardware_is_drawn_only_where_asked(tmp_path: Path) -> None:
    never, always = tmp_path / "never", tmp_path / "always"
    generate(never, 3, 8, workers=1, features=Realism(hardware=0.0))
    generate(always, 3, 8, workers=1, features=Realism(hardware=1.0))
    features = {f for r in json.loads((never / "joints.json").read_text()).values() for f in r["features"]}
    assert not any("hardware" in f for f in features)
    for record in json.loads((always / "joints.json").read_text()).values():
        assert sum("hardware" in f for f in record["features"]) == 2, "one item on each hand"
    plain, _ = _hand_paths(Morphology(sesamoids=False))
    plated, hand = _hand_paths(Morphology(sesamoids=False, hardware="plate"))
    assert hand.features == ["hardware:plate"] and plated.max() > plain.max() + 5.0, "metal is far denser than bone"


def test_confounders_and_disease_appear_when_drawn() -> None:
    erosion = {"mcp2": 5, "pip3": 3}
    morph = Morphology(sesamoids=True, fracture="mc5", flexion=(0.0, 0.0, 45.0, 0.0, 0.0), inflamed=("mcp2",),
                       crossed_little_finger=True, ulnar_deviation=15.0, varied_erosions=True)  # fmt: skip
    plain, base_hand = _hand_paths(Morphology(sesamoids=False), erosion)
    drawn, hand = _hand_paths(morph, erosion)
    assert {"fracture:mc5", "flexed:3", "crossed_little_finger", "ulnar_deviation:15"} <= set(hand.features)
    flexed = np.linalg.norm(hand.sites["dip3"].centre - hand.sites["pip3"].centre)
    straight = np.linalg.norm(base_hand.sites["dip3"].centre - base_hand.sites["pip3"].centre)
    assert flexed < straight * 0.8, "a flexed finger is foreshortened"
    assert drawn.sum() != plain.sum()


def test_version_2_dicom_headers_are_what_a_modality_writes(realistic: Path) -> None:
    file_set = FileSet()
    seen_film = False
    for image in sorted((realistic / "images").iterdir()):
        ds = pydicom.dcmread(image)
        for keyword in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "SeriesNumber", "InstanceNumber"):
            assert str(ds.get(keyword, "")).strip(), (image.name, keyword)
        assert ds.PatientSex in ("F", "M") and ds.PatientAge.endswith("Y")
        file_set.add(ds)  # pydicom's FileSet takes it into a DICOMDIR
        seen_film |= ds.Modality == "RG"
        assert read_image(image).pixels.shape == (ds.Rows, ds.Columns)
    assert len(list(file_set)) == 8


def test_scanned_films_keep_their_joints_on_the_scan(tmp_path: Path) -> None:
    generate(tmp_path, 2, 3, workers=1, clinic=ClinicRanges(film_share=1.0))
    for name, record in json.loads((tmp_path / "joints.json").read_text()).items():
        ds = pydicom.dcmread(tmp_path / name)
        assert ds.Modality == "RG" and ds.BitsStored == 8 and "PixelSpacing" not in ds
        assert "scanned_film" in record["features"] and (record["rows"], record["columns"]) == (ds.Rows, ds.Columns)
        for joint in record["joints"]:
            assert 0 <= joint["x"] < ds.Columns and 0 <= joint["y"] < ds.Rows
        pixels = read_image(tmp_path / name).pixels
        rows, cols = np.indices(pixels.shape)
        for joint in record["joints"][::10]:  # the bones around each joint are there, not background
            near = np.hypot(cols - joint["x"], rows - joint["y"]) < joint["radius"]
            assert pixels[near].mean() > 2 * np.median(pixels), joint["column"]


def test_a_fused_carpus_is_scored_at_the_maximum(tmp_path: Path) -> None:
    generate(tmp_path, 40, 12, workers=2)
    truth = {r["Patient_ID"]: r for r in _rows(tmp_path / "truth.csv")}
    fused = 0
    for name, record in json.loads((tmp_path / "joints.json").read_text()).items():
        patient = Path(name).stem
        for hand in HANDS:
            if f"{hand}:carpal_ankylosis" in record["features"]:
                fused += 1
                for column in (f"{hand}_wrist_J__mna", f"{hand}_wrist_J__radcar", f"{hand}_wrist_E__lunate"):
                    top = 4 if "_J__" in column else 5
                    assert int(truth[patient][column]) == top
    assert fused > 0


def test_evaluate_sets_the_model_beside_the_readers(realistic: Path, bundle: Path, tmp_path: Path) -> None:
    from svdh_trainer.evaluate import evaluate_bundle
    from svdh_trainer.metrics import icc_agreement

    metrics = evaluate_bundle(bundle, realistic, bootstrap=50, report_dir=tmp_path / "report")
    rows = {row["pair"]: row for row in metrics["agreement"]}
    assert {"model vs readers' mean", "model vs reader A", "reader A vs reader B", "model vs exact grades",
            "reader A vs exact grades", "readers' mean vs exact grades"} <= set(rows)  # fmt: skip
    readers = _rows(realistic / "readers.csv")
    a = np.array([float(r["Overall_Tol"]) for r in readers if r["Reader"] == "A"])
    b = np.array([float(r["Overall_Tol"]) for r in readers if r["Reader"] == "B"])
    n = metrics["n"]
    assert rows["reader A vs reader B"]["n"] == n == len(a) - metrics["rejected"] - metrics["failures"]
    if n == len(a):  # every image scored: the table's figures are the readers' own
        assert rows["reader A vs reader B"]["rmse"] == pytest.approx(np.sqrt(np.mean((a - b) ** 2)), abs=1e-3)
        assert rows["reader A vs reader B"]["icc"] == pytest.approx(icc_agreement(np.c_[a, b]), abs=1e-4)
    assert 0.0 <= rows["reader A vs reader B"]["area_kappa"] <= 1.0
    assert "## The model beside the readers" in (tmp_path / "report" / "report.md").read_text()


def test_the_two_readers_agree_as_trained_readers_do() -> None:
    from svdh_trainer.metrics import icc_agreement, pooled_area_kappa
    from svdh_trainer.phantom.grades import draw_patient
    from svdh_trainer.phantom.readers import read_patient

    rng = np.random.default_rng(5)
    columns = grade_columns()
    tops = np.array([a.max_grade for _ in HANDS for a in AREAS])
    first, second = [], []
    for _ in range(600):
        read = read_patient(draw_patient(rng).grades, rng)
        first.append([read["A"][c[:2]][c] for c in columns])
        second.append([read["B"][c[:2]][c] for c in columns])
    first, second = np.array(first), np.array(second)
    icc = icc_agreement(np.c_[first.sum(1), second.sum(1)])
    kappa = pooled_area_kappa(first, second, tops)
    assert 0.85 <= icc <= 0.94 and 0.7 <= kappa <= 0.85, (icc, kappa)  # trials: ICC ~0.9, kappa 0.6-0.8


def test_evaluate_can_measure_the_model_beyond_its_input_gate(realistic: Path, tmp_path: Path) -> None:
    import shutil

    from svdh_runtime.bundle import default_bundle_path, load_bundle
    from svdh_runtime.manifest import MANIFEST_NAME
    from svdh_trainer.evaluate import evaluate_bundle

    strict = tmp_path / "strict"  # the shipped bundle with a gate so strict that it turns some phantoms away
    shutil.copytree(default_bundle_path(), strict)
    manifest = load_bundle(strict).manifest
    manifest = replace(manifest, outputs=replace(manifest.outputs, ood_threshold=0.95))
    manifest.write(strict / MANIFEST_NAME)
    gated = evaluate_bundle(strict, realistic, bootstrap=0)
    ungated = evaluate_bundle(strict, realistic, bootstrap=0, ignore_gate=True)
    assert gated["rejected"] > 0 and gated["n"] + gated["rejected"] == 8
    assert ungated["n"] == 8 and ungated["rejected"] == 0 and ungated["gate_would_reject"] == gated["rejected"]
