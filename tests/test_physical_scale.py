"""Physical scale: a canvas with ``mm_per_pixel`` draws every radiograph of known spacing at that scale."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import default_bundle_path, load_bundle
from svdh_runtime.errors import BundleError, InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import Manifest, Preprocessing
from svdh_runtime.preprocess import placement, prepare, prepare_loaded
from svdh_trainer.damage_map import damage_points
from svdh_trainer.datasets import read_phantom_dir
from svdh_trainer.phantom import generate as phantom
from svdh_trainer.phantom.dicom import write_radiograph

SCALED = Preprocessing(height=320, width=384, mm_per_pixel=0.8)


def _shape(width_mm: float, height_mm: float, spacing: float) -> tuple[int, int]:
    return round(height_mm / spacing), round(width_mm / spacing)


@pytest.mark.parametrize("spacing", [0.1, 0.15, 0.2, 0.3])
def test_the_same_field_lands_the_same_whatever_the_detector_resolution(spacing: float) -> None:
    height, width, scale = placement(_shape(280, 220, spacing), SCALED, (spacing, spacing))
    assert (height, width) == (275, 350) and scale == pytest.approx(0.8)


def test_a_narrower_field_keeps_the_hand_at_its_size_where_fitting_would_enlarge_it() -> None:
    spacing = (0.2, 0.2)
    full = placement(_shape(300, 240, 0.2), SCALED, spacing)
    narrow = placement(_shape(240, 200, 0.2), SCALED, spacing)
    assert full[2] == narrow[2] == pytest.approx(0.8)
    assert narrow[:2] == (250, 300)  # 240 mm / 0.8 = 300 canvas pixels, not stretched to 384
    fitted = placement(_shape(240, 200, 0.2), dataclasses.replace(SCALED, mm_per_pixel=0.0), spacing)
    assert fitted[1] == 384 and fitted[2] is None


def test_a_field_too_large_for_the_canvas_is_shrunk_to_fit_and_says_so() -> None:
    height, width, scale = placement(_shape(430, 350, 0.15), SCALED, (0.15, 0.15))
    assert width == 384 and height <= 320 and scale == pytest.approx(430 / 384, rel=1e-3)


def test_anisotropic_pixels_become_square() -> None:
    height, width, _ = placement((1000, 2000), SCALED, (0.2, 0.1))  # 200 x 200 mm
    assert height == width == 250


@pytest.mark.parametrize("spacing", [None, (0.0, 0.0), (5.0, 5.0), (float("nan"), 0.2), (0.001, 0.001)])
def test_unknown_or_implausible_spacing_falls_back_to_fitting(spacing) -> None:
    height, width, scale = placement((1250, 1600), SCALED, spacing)
    assert scale is None and width == 384


def test_an_image_too_small_to_show_a_hand_is_refused() -> None:
    with pytest.raises(InputError, match=r"spans only 20 x 20 mm .*too small to show a hand"):
        placement((100, 100), SCALED, (0.2, 0.2))


def test_reduced_resolution_decodes_are_placed_like_the_full_image() -> None:
    image = np.random.default_rng(0).random((1200, 1500)).astype(np.float32)
    half = image.reshape(600, 2, 750, 2).mean(axis=(1, 3))
    full = prepare(image, SCALED, spacing_mm=(0.2, 0.2))
    reduced = prepare(half, SCALED, reduction=1, full_shape=(1200, 1500), spacing_mm=(0.2, 0.2))
    assert full.box == reduced.box and full.mm_per_pixel == reduced.mm_per_pixel == pytest.approx(0.8)


def test_manifest_checks_the_scale_and_old_manifests_read_as_fitted() -> None:
    data = json.loads((default_bundle_path() / "manifest.json").read_text())
    del data["preprocessing"]["mm_per_pixel"]
    assert Manifest.from_dict(data).preprocessing.mm_per_pixel == 0.0
    for bad in (-1.0, 50.0, "1"):
        data["preprocessing"]["mm_per_pixel"] = bad
        with pytest.raises(BundleError, match="mm_per_pixel"):
            Manifest.from_dict(data)


def test_damage_targets_use_the_same_placement_as_the_images(phantoms: Path) -> None:
    spec = Preprocessing(height=320, width=384, mm_per_pixel=1.2)  # smaller than fitted: placement matters
    samples = read_phantom_dir(phantoms)[:3]
    joints = json.loads((phantoms / "joints.json").read_text())
    for sample, points in zip(samples, damage_points(samples, spec)):
        box = prepare_loaded(read_image(sample.path), spec).box
        record = joints[sample.path.relative_to(phantoms).as_posix()]
        assert box.width < 384
        damaged = [j for j in record["joints"] if j["grade"] > 0]
        expected_x = [box.left + j["x"] * box.width / record["columns"] for j in damaged]
        expected_y = [box.top + j["y"] * box.height / record["rows"] for j in damaged]
        np.testing.assert_allclose(points[:, 0], expected_x, atol=0.6)
        np.testing.assert_allclose(points[:, 1], expected_y, atol=0.6)


def _rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spacing: float, index: int) -> Path:
    """Held-out patient ``index`` (seed 2) acquired on a detector of the given spacing, all else the same."""
    preset = dataclasses.replace(phantom.ACQUISITION_PRESETS["default"], spacing_mm=((spacing, spacing),))
    monkeypatch.setitem(phantom.ACQUISITION_PRESETS, f"test-{spacing}", preset)
    out = tmp_path / str(spacing)
    phantom.make_patient(out, 2, index, "both", f"test-{spacing}")
    return out / "images" / f"S2-{index:05d}.dcm"


def test_default_bundle_scores_do_not_depend_on_detector_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(default_bundle_path())
    assert bundle.manifest.preprocessing.mm_per_pixel > 0
    backend = create_backend("onnxruntime", bundle)
    spec = bundle.manifest.preprocessing
    for index in (3, 8):
        scores = []
        for spacing in (0.14, 0.2, 0.3):
            prepared = prepare_loaded(read_image(_rendered(tmp_path, monkeypatch, spacing, index)), spec)
            assert prepared.mm_per_pixel == pytest.approx(spec.mm_per_pixel, rel=0.01)
            scores.append(float(backend.infer(prepared.canvas[None, None])["score"][0]))
        assert max(scores) - min(scores) < 1.5, scores


def test_svdh_run_reports_the_scale_it_drew_at(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    stored = (rng.random((1000, 1200)) * 3000 + 500).astype(np.uint16)
    dicom = tmp_path / "narrow.dcm"
    write_radiograph(
        dicom, stored, patient_id="P", uid_seed="scale", modality="DX", photometric="MONOCHROME2",
        bits_stored=12, pixel_spacing_mm=0.2, laterality="B",
    )  # fmt: skip
    wide = tmp_path / "wide.dcm"  # 500 x 350 mm: more than the canvas holds at the canonical scale
    write_radiograph(
        wide, stored, patient_id="P", uid_seed="wide", modality="DX", photometric="MONOCHROME2",
        bits_stored=12, pixel_spacing_mm=0.35, laterality="B",
    )  # fmt: skip
    png = tmp_path / "no-spacing.png"
    Image.fromarray((stored // 16).astype(np.uint8)).save(png)
    done = run_cli("svdh-run", str(dicom), str(wide), str(png), "--json")
    records = {Path(r["source"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    spec = load_bundle(default_bundle_path()).manifest.preprocessing
    canonical = spec.mm_per_pixel
    assert records["narrow.dcm"]["physical_scale"] == {"canonical_mm_per_pixel": canonical, "mm_per_pixel": canonical}
    shrunk = max(1000 * 0.35 / spec.height, 1200 * 0.35 / spec.width)  # the field's larger side fills the canvas
    assert shrunk > canonical
    assert records["wide.dcm"]["physical_scale"]["mm_per_pixel"] == pytest.approx(shrunk, abs=1e-4)
    assert records["wide.dcm"]["physical_scale"]["note"].startswith("field larger than the canvas")
    assert records["no-spacing.png"]["physical_scale"]["note"] == "pixel spacing unknown: fitted"
