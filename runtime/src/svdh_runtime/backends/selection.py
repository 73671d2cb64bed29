"""Which backend runs a bundle here, and why, in one line.

``auto`` loads a TensorRT engine only when the bundle holds one whose sidecar
matches this GPU and TensorRT version and whose plan passes its checksum;
otherwise it explains why not and uses ONNX Runtime (CUDA execution provider
when onnxruntime-gpu is installed, else CPU). ``tensorrt`` does the same but
fails instead of falling back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bundle import Bundle
from ..engines import ENGINES_DIR, EngineError, find_engine, read_sidecars, read_verified_plan
from ..errors import BackendError
from .base import Backend, output_shape_problems

BUILD_HINT = "build one with `svdh-run --build-engine` or `svdh-export build-engine BUNDLE`"


@dataclass
class BackendSelection:
    """The backend that will run, and why it was chosen (for the log line)."""

    backend: Backend
    reason: str


class _NoEngine(Exception):
    """No TensorRT engine can run here; the message says why."""


def _open_tensorrt(bundle: Bundle) -> BackendSelection:
    from .cuda import GpuUnavailable
    from .tensorrt import TensorRTBackend, TensorRTUnavailable, this_device

    sidecars, problems = read_sidecars(bundle)
    if not sidecars:
        raise _NoEngine("; ".join(problems) or "no TensorRT engine in the bundle")
    try:
        device, trt = this_device()
    except (GpuUnavailable, TensorRTUnavailable) as exc:
        raise _NoEngine(str(exc)) from None
    search = find_engine(bundle, device, (sidecars, problems))
    if search.sidecar is None:
        raise _NoEngine(f"no engine for {device.describe()}: {search.explain()}; {BUILD_HINT}")
    try:
        plan = read_verified_plan(bundle, search.sidecar)
        backend = TensorRTBackend(plan, search.sidecar, trt)
    except (EngineError, BackendError) as exc:
        raise _NoEngine(f"engine refused: {exc}") from None
    return BackendSelection(backend, f"{ENGINES_DIR}/{search.sidecar.plan} on {device.describe()}")


def _open_onnxruntime(bundle: Bundle, threads: int | None) -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(bundle.model_bytes, threads=threads)
    problems = output_shape_problems(backend.output_shapes, bundle.manifest.outputs)
    if problems:
        backend.close()
        raise BackendError(f"the model does not match its manifest: {'; '.join(problems)}")
    return backend


def select_backend(name: str, bundle: Bundle, threads: int | None = None) -> BackendSelection:
    """Open the backend ``name`` (``auto``, ``tensorrt`` or ``onnxruntime``) for ``bundle``."""
    if name == "onnxruntime":
        return BackendSelection(_open_onnxruntime(bundle, threads), "asked for")
    try:
        return _open_tensorrt(bundle)
    except _NoEngine as exc:
        if name == "tensorrt":
            raise EngineError(f"cannot use TensorRT: {exc}") from None
        return BackendSelection(_open_onnxruntime(bundle, threads), f"TensorRT not used: {exc}")
