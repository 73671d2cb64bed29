"""INT8 for CPU boxes: static quantization checked against FP32, kept in the bundle, chosen by --backend auto."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from svdh_runtime.bundle import INT8_FILE, load_bundle
from svdh_runtime.errors import BundleError


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory, bundle: Path, phantoms: Path) -> Path:
    """The test bundle with an INT8 model, calibrated on the phantoms' images."""
    copy = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(bundle, copy)
    done = run_cli("svdh-export", "int8", str(copy), "-c", str(phantoms / "images"), "--allow-slower")
    assert done.returncode == 0, done.stderr
    assert "calibrating INT8 on 16 image(s)" in done.stderr and "wrote" in done.stderr
    return copy


def test_int8_model_is_checked_against_fp32_and_listed(int8_bundle: Path) -> None:
    loaded = load_bundle(int8_bundle)
    check = loaded.manifest.provenance["int8_check"]
    assert check["images"] == 16 and check["int8_convolutions"] > 0
    assert check["max_score_diff"] <= 0.5 and check["max_probs_diff"] <= 0.01
    assert check["min_cam_correlation"] >= 0.99 and check.get("max_gate_relative_diff", 0.0) <= 0.02
    assert set(check["speed_cpu"]) == {"batch1", "batch8"}
    assert INT8_FILE in loaded.manifest.files
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_bundle / INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format


def test_auto_backend_on_a_cpu_runs_int8_and_says_so(int8_bundle: Path, phantoms: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    auto = run_cli("svdh-run", str(image), "--model", str(int8_bundle), "--json")
    fp32 = run_cli("svdh-run", str(image), "--model", str(int8_bundle), "--json", "--backend", "onnxruntime")
    assert auto.returncode == fp32.returncode == 0, auto.stderr
    assert f"on onnxruntime-cpu-int8 ({INT8_FILE}" in auto.stderr
    quantized, reference = json.loads(auto.stdout), json.loads(fp32.stdout)
    assert quantized["backend"] == "onnxruntime-cpu-int8" and reference["backend"] == "onnxruntime-cpu"
    assert quantized["score"] == pytest.approx(reference["score"], abs=0.5)


def test_a_damaged_int8_model_is_refused_before_use(int8_bundle: Path, phantoms: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "bundle"
    shutil.copytree(int8_bundle, damaged)
    data = (damaged / INT8_FILE).read_bytes()
    (damaged / INT8_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match=f"checksum mismatch for {INT8_FILE}"):
        load_bundle(damaged)
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(image), "--model", str(damaged))
    assert done.returncode == 3 and f"checksum mismatch for {INT8_FILE}" in done.stderr
    assert "Traceback" not in done.stderr


def test_int8_outside_tolerance_is_not_written(bundle: Path, phantoms: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from svdh_exporter import int8

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    before = (copy / "manifest.json").read_bytes()
    monkeypatch.setattr(int8, "within_tolerance", lambda check: False)
    images = sorted((phantoms / "images").glob("*.dcm"))[:4]
    with pytest.raises(int8.Int8Error, match="no INT8 model reproduces the FP32 model within tolerance"):
        int8.write_int8(copy, images)
    assert not (copy / INT8_FILE).exists() and (copy / "manifest.json").read_bytes() == before


def test_attempts_keep_ever_more_of_the_last_convolutions_fp32() -> None:
    from svdh_exporter.int8 import attempts

    names = [f"conv{i}" for i in range(10)]
    assert attempts(names) == [[], ["conv9"], ["conv8", "conv9"], names[-4:]]


def test_calibration_needs_images(bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    done = run_cli("svdh-export", "int8", str(bundle), "-c", str(empty))
    assert done.returncode == 2 and "no radiographs found" in done.stderr
