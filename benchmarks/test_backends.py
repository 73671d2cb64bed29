"""Model time of every backend present, side by side in one run, at batch 1 and 8.

Always: ONNX Runtime CPU and torch eager FP32 on the CPU (the baseline a user
would write by hand). Where present: TensorRT FP16 (an engine in the bundle
matching this GPU), ONNX Runtime CUDA, torch eager FP32 on the GPU and torch
FP16 with CUDA graphs. Absent ones are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from conftest import THREADS
from svdh_runtime.bundle import Bundle

BATCHES = (1, 8)
BACKENDS = (
    "onnxruntime-cpu",
    "torch-eager-fp32-cpu",
    "tensorrt-fp16",
    "onnxruntime-cuda",
    "torch-eager-fp32-cuda",
    "torch-fp16-cudagraph",
)


def _torch_runner(bundle: Bundle, device: str, batch: int, fp16_graph: bool) -> Callable[[np.ndarray], object]:
    torch = pytest.importorskip("torch", reason="torch baselines need torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    from torch_baseline import torch_graph

    torch.set_num_threads(THREADS)
    graph = torch_graph(bundle.manifest).to(device)
    if not fp16_graph:

        def run(images: np.ndarray) -> object:
            with torch.inference_mode():
                outputs = graph(torch.from_numpy(images).to(device))
                return [o.cpu() for o in outputs]

        return run
    graph = graph.half()
    spec = bundle.manifest.preprocessing
    static_input = torch.zeros(batch, 1, spec.height, spec.width, device=device, dtype=torch.half)
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                graph(static_input)
        torch.cuda.current_stream().wait_stream(side)
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            static_outputs = graph(static_input)

    def replay(images: np.ndarray) -> object:
        static_input.copy_(torch.from_numpy(images).to(device, non_blocking=True))
        captured.replay()
        return [o.float().cpu() for o in static_outputs]

    return replay


def _runtime_runner(bundle: Bundle, name: str) -> Callable[[np.ndarray], object]:
    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from svdh_runtime.backends.selection import select_backend

    if name == "onnxruntime-cpu":
        return OnnxRuntimeBackend(bundle.model_bytes, threads=THREADS, providers=["CPUExecutionProvider"]).infer
    if name == "onnxruntime-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            pytest.skip("ONNX Runtime has no CUDA execution provider (install onnxruntime-gpu)")
        return OnnxRuntimeBackend(bundle.model_bytes, providers=["CUDAExecutionProvider"]).infer
    selection = select_backend("auto", bundle)
    if selection.backend.name != "tensorrt":
        pytest.skip(selection.reason)
    return selection.backend.infer


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_model(benchmark, bundle: Bundle, canvas: np.ndarray, backend: str, batch: int) -> None:  # noqa: ANN001
    if backend.startswith("torch"):
        device = "cpu" if backend.endswith("cpu") else "cuda"
        run = _torch_runner(bundle, device, batch, fp16_graph=backend == "torch-fp16-cudagraph")
    else:
        run = _runtime_runner(bundle, backend)
    images = np.ascontiguousarray(np.repeat(canvas, batch, axis=0))
    run(images)  # warm-up: lazy initialisation, autotuning
    if batch > 1 and backend.endswith("cpu"):
        benchmark.pedantic(run, args=(images,), rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(run, images)
    benchmark.extra_info.update({"backend": backend, "batch": batch})
