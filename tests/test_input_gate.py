"""The input gate: a feature-space distance fitted at export, computed in the graph, enforced by the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from svdh_exporter.ood import fit_distance
from svdh_runtime.bundle import default_bundle_path, load_bundle
from svdh_runtime.manifest import MANIFEST_NAME


def _numpy_distance(module, values: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The documented formula, written independently of the torch module."""
    mean, directions = module.mean.double().numpy(), module.directions.double().numpy()
    variances = 1.0 / module.inverse_std.double().numpy() ** 2
    centred = values - mean
    projected = centred @ directions
    residual = centred - projected @ directions.T
    terms = (projected**2 / variances).sum(axis=1) + (residual**2).sum(axis=1) * module.residual_scale
    return np.sqrt(terms / (directions.shape[1] + 1))


def test_distance_is_about_one_on_its_fitting_data_and_large_far_away() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    scales = np.geomspace(10.0, 0.01, 40)
    fit = (rng.standard_normal((3000, 40)) * scales) @ basis.T + 5.0
    module = fit_distance(fit, components=12)
    with torch.no_grad():
        on_fit = module(torch.from_numpy(fit).float()).double().numpy()
    assert abs(float((on_fit**2).mean()) - 1.0) < 0.02
    np.testing.assert_allclose(on_fit, _numpy_distance(module, fit), rtol=1e-4)
    fresh = (rng.standard_normal((500, 40)) * scales) @ basis.T + 5.0
    off_manifold = fresh + 10.0 * np.sqrt(1.0 / module.residual_scale) * basis[:, -1]  # outside the top 12 directions
    along_first = fresh + 12.0 * scales[0] * basis[:, 0]  # 12 standard deviations along the main direction
    with torch.no_grad():
        near = module(torch.from_numpy(fresh).float()).numpy()
        far = [module(torch.from_numpy(v).float()).numpy() for v in (off_manifold, along_first)]
    assert np.quantile(near, 0.99) < 1.6
    assert all(f.min() > 1.5 * np.quantile(near, 0.995) for f in far), [f.min() for f in far]


@pytest.fixture(scope="module")
def gated(trained: Path, phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gated") / "bundle"
    done = run_cli("svdh-export", "onnx", str(trained), "--out", str(out), "--ood-fit", str(phantoms / "images"))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_gated_export_records_the_gate_and_runs_it_in_the_graph(gated: Path) -> None:
    bundle = load_bundle(gated)
    assert bundle.manifest.outputs.ood_threshold > 0 and "Mahalanobis" in bundle.manifest.outputs.ood_method
    record = bundle.manifest.provenance["input_gate"]
    assert record["fit_images"] + record["calibration_images"] == 16
    assert bundle.manifest.provenance["export_check"]["max_gate_relative_diff"] <= 1e-3
    import onnx

    assert [o.name for o in onnx.load(str(gated / "model.onnx")).graph.output][-1] == "ood_distance"


def _with_threshold(bundle_dir: Path, target: Path, threshold: float) -> Path:
    shutil.copytree(bundle_dir, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["outputs"]["ood_threshold"] = threshold
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def test_runtime_rejects_beyond_the_threshold_and_scores_within(gated: Path, phantoms: Path, tmp_path: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    strict = _with_threshold(gated, tmp_path / "strict", 1e-6)
    done = run_cli("svdh-run", str(image), "--model", str(strict), "--json")
    record = json.loads(done.stdout)
    assert done.returncode == 2 and record["status"] == "rejected" and "score" not in record
    assert "unlike the hand radiographs" in record["reason"] and record["input_gate"]["threshold"] == 1e-6
    assert done.stderr.count("input-gate distance") == 1 and "Traceback" not in done.stderr
    lenient = _with_threshold(gated, tmp_path / "lenient", 1e6)
    done = run_cli("svdh-run", str(image), "--model", str(lenient), "--json")
    record = json.loads(done.stdout)
    assert done.returncode == 0 and record["status"] == "ok" and 0 < record["input_gate"]["distance"] < 1e6


def test_a_gate_in_the_manifest_without_the_output_is_a_bundle_error(
    bundle: Path, phantoms: Path, tmp_path: Path
) -> None:
    broken = _with_threshold(bundle, tmp_path / "broken", 2.0)
    done = run_cli("svdh-run", str(sorted((phantoms / "images").glob("*.dcm"))[0]), "--model", str(broken))
    assert done.returncode == 3 and "no ood_distance output" in done.stderr and "Traceback" not in done.stderr


def test_default_bundle_rejects_non_hand_images_and_keeps_phantoms(phantoms: Path, tmp_path: Path) -> None:
    """Held-out phantoms (acquired like the training ones) pass; pydicom's CT/MR/US…, photos, noise do not."""
    from svdh_trainer.gate_check import check_gate, hand_images, non_hand_images

    bundle = load_bundle(default_bundle_path())
    assert bundle.manifest.outputs.ood_threshold > 0, "the default bundle has an input gate"
    check = check_gate(bundle, [*hand_images([phantoms]), *non_hand_images()])
    hands, others = check.rate(True), check.rate(False)
    assert hands[1] == 16 and hands[0] == 0, check.counts
    assert others[1] >= 60 and others[0] >= 0.95 * others[1], check.counts
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 65535, (900, 700), dtype=np.uint16)).save(noise)
    done = run_cli("svdh-run", str(noise), "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["status"] == "rejected"


def test_a_site_recalibrates_the_threshold_on_its_own_images(gated: Path, phantoms: Path, tmp_path: Path) -> None:
    from svdh_runtime.backends import create_backend
    from svdh_runtime.imageio import read_image
    from svdh_runtime.preprocess import prepare_loaded

    site = tmp_path / "site"
    shutil.copytree(gated, site)
    folder = phantoms / "images"
    done = run_cli("svdh-export", "gate-calibrate", str(site), str(folder), str(folder), "--quantile", "0.9")
    assert done.returncode == 0, done.stderr
    bundle = load_bundle(site)
    backend = create_backend("onnxruntime", bundle)
    spec = bundle.manifest.preprocessing
    found = [
        float(backend.infer(prepare_loaded(read_image(p), spec).canvas[None, None])["ood_distance"][0])
        for p in sorted(folder.glob("*.dcm"))
    ]
    expected = float(np.quantile(found + found, 0.9) * 1.25)
    assert bundle.manifest.outputs.ood_threshold == pytest.approx(expected, rel=1e-3)
    [change] = bundle.manifest.provenance["input_gate"]["recalibrations"]
    assert change["images"] == 32 and change["previous_threshold"] == load_bundle(gated).manifest.outputs.ood_threshold
    too_few = run_cli("svdh-export", "gate-calibrate", str(site), str(folder))
    assert too_few.returncode == 3 and "at least 20" in too_few.stderr
    ungated = run_cli("svdh-export", "gate-calibrate", str(default_bundle_path().parent / "nope"), str(folder))
    assert ungated.returncode == 3 and "Traceback" not in ungated.stderr
