"""Tests that need an NVIDIA GPU (and, for engines, TensorRT with its builder).

Each skips with the reason when its hardware or library is absent; on a GPU
box run them with ``benchmarks/gpu_check.sh`` or ``python3 -m pytest -m gpu``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from svdh_runtime.backends.cuda import GpuUnavailable, gpu_identity, open_cuda_memory
from svdh_runtime.backends.tensorrt import TensorRTUnavailable, this_device
from svdh_runtime.bundle import default_bundle_path

pytestmark = pytest.mark.gpu
SAMPLE = REPO / "samples" / "sample.dcm"


def _gpu_reason() -> str | None:
    try:
        gpu_identity()
    except GpuUnavailable as exc:
        return f"needs an NVIDIA GPU: {exc}"
    return None


def _tensorrt_reason() -> str | None:
    try:
        this_device(lean_allowed=False)
    except (GpuUnavailable, TensorRTUnavailable) as exc:
        return f"needs TensorRT and a GPU: {exc}"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=_gpu_reason() or "")
needs_tensorrt = pytest.mark.skipif(_tensorrt_reason() is not None, reason=_tensorrt_reason() or "")


@needs_gpu
def test_pinned_and_device_memory_round_trip() -> None:
    memory = open_cuda_memory()
    try:
        values = np.random.default_rng(0).standard_normal((8, 1, 64, 48)).astype(np.float32)
        host_in, host_out = memory.host_array(values.shape, np.float32), memory.host_array(values.shape, np.float32)
        host_in[...] = values
        device = memory.device_buffer(values.nbytes)
        memory.to_device(device, host_in, values.nbytes // 2)  # a partial copy, as a smaller batch makes
        memory.to_host(host_out, device, values.nbytes // 2)
        memory.synchronize()
        np.testing.assert_array_equal(host_out[:4], values[:4])
    finally:
        memory.close()


@needs_gpu
def test_gpu_identity_names_a_compute_capability() -> None:
    name, capability = gpu_identity()
    assert name and capability.replace(".", "").isdigit()


@needs_tensorrt
def test_built_engine_scores_like_onnx_runtime(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    done = run_cli("svdh-export", "build-engine", str(bundle), "--timing-cache", str(tmp_path / "cache"), timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    [sidecar] = (bundle / "engines").glob("*.json")
    assert json.loads(sidecar.read_text())["validation"]["max_score_diff"] <= 0.5
    scores = {}
    for backend in ("tensorrt", "onnxruntime"):
        done = run_cli("svdh-run", str(SAMPLE), "--model", str(bundle), "--backend", backend, "--json")
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert record["backend"].startswith(backend)
        scores[backend] = record["score"]
    assert abs(scores["tensorrt"] - scores["onnxruntime"]) <= 0.5
    done = run_cli("svdh-run", str(SAMPLE), "--model", str(bundle), "--json")
    assert json.loads(done.stdout)["backend"] == "tensorrt", "auto picks the matching engine"
