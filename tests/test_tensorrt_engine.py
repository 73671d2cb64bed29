"""TensorRT engines: build, validate, sidecar, selection, fallback and refusal.

No machine here has TensorRT or a GPU, so TensorRT and CUDA memory are
replaced by the test doubles in ``fake_tensorrt.py``: these tests check svdh's
own logic around them. Real TensorRT runs in ``test_gpu.py`` where present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from fake_tensorrt import FakeDeviceMemory, make_fake_tensorrt
from svdh_exporter import engine_build
from svdh_exporter.engine_build import EngineBuildError, EngineBuildOptions, build_engine
from svdh_exporter.fp16 import PrecisionError, calibration_batch
from svdh_runtime.backends import onnxruntime as ort_backend
from svdh_runtime.backends import select_backend
from svdh_runtime.backends import tensorrt as trt_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.engines import ENGINES_DIR, DeviceInfo, EngineError, EngineSidecar, engine_stem, find_engine

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", "9.0", "10.13.0.35")


@pytest.fixture()
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


@pytest.fixture()
def box(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Make this process look like an H100 box with TensorRT 10.13 (doubles); returns a setter for other boxes."""
    state = {"device": H100, "trt": make_fake_tensorrt(H100.tensorrt_version)}

    def device(lean_allowed: bool = True):  # noqa: ANN202
        return state["device"], state["trt"]

    monkeypatch.setattr(engine_build, "this_device", device)
    monkeypatch.setattr(trt_backend, "this_device", device)
    monkeypatch.setattr(trt_backend, "open_cuda_memory", FakeDeviceMemory)

    def switch(device_info: DeviceInfo | None = None, **fake_options) -> None:  # noqa: ANN001
        if device_info is not None:
            state["device"] = device_info
        state["trt"] = make_fake_tensorrt(state["device"].tensorrt_version, **fake_options)

    switch.state = state
    return switch


def _options(tmp_path: Path, **changes) -> EngineBuildOptions:  # noqa: ANN003
    return EngineBuildOptions(timing_cache=tmp_path / "timing.cache", **changes)


def _sidecar(bundle_dir: Path) -> tuple[Path, dict]:
    [path] = sorted((bundle_dir / ENGINES_DIR).glob("*.json"))
    return path, json.loads(path.read_text())


def test_build_engine_writes_a_validated_plan_and_sidecar(bundle_copy: Path, box, tmp_path: Path) -> None:
    sidecar = build_engine(bundle_copy, _options(tmp_path, max_batch=4), log=lambda m: None)
    bundle = load_bundle(bundle_copy)
    assert "model.fp16.onnx" in bundle.manifest.files, "the mixed-precision ONNX is made first"
    path, data = _sidecar(bundle_copy)
    assert path.stem == engine_stem(H100, False) == "nvidia-h100-80gb-hbm3-sm90-trt10.13.0.35-fp16"
    assert data["source_onnx_sha256"] == bundle.manifest.files["model.fp16.onnx"]
    assert data["gpu_name"] == H100.gpu_name and data["compute_capability"] == "9.0"
    assert data["profile"] == {"min": 1, "opt": 1, "max": 4}
    assert data["validation"]["max_score_diff"] <= 0.5 and data["validation"]["min_cam_correlation"] >= 0.99
    assert EngineSidecar.from_dict(data, "x") == sidecar
    [build] = box.state["trt"].builds
    spec = bundle.manifest.preprocessing
    item = [1, spec.height, spec.width]
    assert build["strongly_typed"] and not build["version_compatible"] and build["workspace_mib"] == 2048
    assert list(build["profile"].values()) == [[[1, *item], [1, *item], [4, *item]]]
    assert (tmp_path / "timing.cache").read_bytes() == b"tuned;", "the timing cache is saved"

    with pytest.raises(EngineBuildError, match="exists"):
        build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    build_engine(bundle_copy, _options(tmp_path, force=True, version_compatible=True), log=lambda m: None)
    assert box.state["trt"].builds[-1]["timing_cache_in"] == "tuned;", "the next build starts from the cache"
    assert box.state["trt"].builds[-1]["version_compatible"]


def test_engine_backend_runs_any_batch_size_like_onnx_runtime(
    bundle_copy: Path, box, tmp_path: Path, phantoms: Path
) -> None:
    build_engine(bundle_copy, _options(tmp_path, max_batch=2), log=lambda m: None)
    bundle = load_bundle(bundle_copy)
    selection = select_backend("auto", bundle)
    assert selection.backend.name == "tensorrt" and engine_stem(H100, False) in selection.reason
    batch = calibration_batch(sorted((phantoms / "images").glob("*.dcm"))[:5], bundle_copy)
    got = selection.backend.infer(batch)  # 5 images through a profile of at most 2: three runs
    want = ort_backend.OnnxRuntimeBackend((bundle_copy / "model.fp16.onnx").read_bytes()).infer(batch)
    for name in ("score", "severity_probs", "cam"):
        assert got[name].shape == want[name].shape and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    memory = selection.backend._memory
    selection.backend.close()
    assert memory.closed


def test_an_engine_outside_tolerance_is_not_kept(bundle_copy: Path, box, tmp_path: Path) -> None:
    box(score_offset=0.8)
    with pytest.raises(PrecisionError, match="not kept"):
        build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    assert not list((bundle_copy / ENGINES_DIR).glob("*")), "nothing is written"


def test_build_errors_name_the_cause(bundle_copy: Path, box, tmp_path: Path) -> None:
    box(unsupported=("Gemm", "Softmax"))
    with pytest.raises(EngineBuildError, match=r"does not support ONNX operator\(s\) Gemm, Softmax"):
        build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    box(needs_workspace_mib=4096)
    with pytest.raises(EngineBuildError, match="out of workspace.*2048 MiB.*--workspace-mib"):
        build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    build_engine(bundle_copy, _options(tmp_path, workspace_mib=4096), log=lambda m: None)


def test_stale_engines_are_explained_and_never_loaded(bundle_copy: Path, box, tmp_path: Path) -> None:
    build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    bundle = load_bundle(bundle_copy)
    others = {
        DeviceInfo("NVIDIA A2", "8.6", "10.13.0.35"): "built for NVIDIA H100 80GB HBM3 (sm_90), TensorRT 10.13.0.35",
        DeviceInfo(
            H100.gpu_name, "9.0", "10.14.1.48"
        ): "this box has NVIDIA H100 80GB HBM3 (sm_90), TensorRT 10.14.1.48",
        DeviceInfo(
            H100.gpu_name, "9.0", "10.13.0.35", "tensorrt_lean"
        ): "lean TensorRT runtime runs only version-compatible",
    }
    for device, reason in others.items():
        box(device)
        search = find_engine(bundle, device)
        assert search.sidecar is None and reason in search.explain()
        selection = select_backend("auto", bundle)
        assert selection.backend.name == "onnxruntime-cpu"
        assert (
            "TensorRT not used" in selection.reason
            and reason in selection.reason
            and "--build-engine" in selection.reason
        )
        with pytest.raises(EngineError, match="cannot use TensorRT"):
            select_backend("tensorrt", bundle)


def test_version_compatible_engines_run_on_later_tensorrt_and_the_lean_runtime(
    bundle_copy: Path, box, tmp_path: Path
) -> None:
    build_engine(bundle_copy, _options(tmp_path, version_compatible=True), log=lambda m: None)
    bundle = load_bundle(bundle_copy)
    box(DeviceInfo(H100.gpu_name, "9.0", "10.15.0.1", "tensorrt_lean"))
    assert select_backend("auto", bundle).backend.name == "tensorrt"
    box(DeviceInfo(H100.gpu_name, "9.0", "10.12.0.36"))
    assert "cannot run on 10.12.0.36" in select_backend("auto", bundle).reason
    box(DeviceInfo(H100.gpu_name, "9.0", "11.4.0.106"))
    assert select_backend("auto", bundle).backend.name == "onnxruntime-cpu", "no compatibility across major versions"


def test_a_tampered_plan_is_refused(bundle_copy: Path, box, tmp_path: Path) -> None:
    sidecar = build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    plan = bundle_copy / ENGINES_DIR / sidecar.plan
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0x01
    plan.write_bytes(bytes(data))
    bundle = load_bundle(bundle_copy)
    selection = select_backend("auto", bundle)
    assert selection.backend.name == "onnxruntime-cpu" and "checksum mismatch" in selection.reason
    with pytest.raises(EngineError, match="checksum mismatch; the engine is damaged or was altered"):
        select_backend("tensorrt", bundle)


def test_an_engine_of_another_model_is_not_loaded(bundle_copy: Path, box, tmp_path: Path) -> None:
    build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    path, data = _sidecar(bundle_copy)
    path.write_text(json.dumps({**data, "source_onnx_sha256": "0" * 64}))
    assert "built from another model" in select_backend("auto", load_bundle(bundle_copy)).reason


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 9},
        {"plan": "../model.onnx"},
        {"profile": {"min": 1, "opt": 4, "max": 2}},
        {"input_shape": [1, 96]},
        {"version_compatible": "yes"},
    ],
)
def test_malformed_sidecars_are_reported_not_loaded(bundle_copy: Path, box, tmp_path: Path, change: dict) -> None:
    build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)
    path, data = _sidecar(bundle_copy)
    path.write_text(json.dumps({**data, **change}))
    selection = select_backend("auto", load_bundle(bundle_copy))
    assert selection.backend.name == "onnxruntime-cpu" and f"{ENGINES_DIR}/{path.name}" in selection.reason


def test_without_tensorrt_the_command_lines_fall_back_or_fail_clearly(bundle_copy: Path, box, tmp_path: Path) -> None:
    build_engine(bundle_copy, _options(tmp_path), log=lambda m: None)  # an engine, but this process has no TensorRT
    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
    done = run_cli("svdh-run", str(sample), "--model", str(bundle_copy), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "onnxruntime-cpu"
    [line] = [line for line in done.stderr.splitlines() if line.startswith("model ")]
    assert "on onnxruntime-cpu (TensorRT not used: TensorRT is not installed" in line
    done = run_cli("svdh-run", str(sample), "--model", str(bundle_copy), "--backend", "tensorrt")
    assert done.returncode == 3 and done.stderr.count("\n") == 1 and "cannot use TensorRT" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli("svdh-export", "build-engine", str(bundle_copy))
    assert done.returncode == 1 and "building engines needs TensorRT" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("svdh-run", str(sample), "--model", str(bundle_copy), "--backend", "onnxruntime", "--build-engine")
    assert done.returncode == 2 and "--build-engine" in done.stderr
