"""Which backend runs a bundle here, and why, in one line.

``auto`` loads a TensorRT engine only when the bundle holds one whose sidecar
matches this GPU and TensorRT version and whose plan passes its checksum;
otherwise it explains why not and uses ONNX Runtime (CUDA execution provider
when onnxruntime-gpu is installed, else CPU). ``tensorrt`` does the same but
fails instead of falling back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bundle import INT8_FILE, MODEL_FILE, Bundle
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


def _open_onnxruntime(bundle: Bundle, threads: int | None, int8: bool = False) -> BackendSelection:
    """ONNX Runtime on the bundle's FP32 model (pre-optimised for this CPU when the bundle has that); with
    ``int8``, on its INT8 model instead when the bundle has one and ONNX Runtime runs on the CPU here."""
    from .cpu_optimized import OPTIMIZED_FILE, fits_this_cpu
    from .onnxruntime import OnnxRuntimeBackend, runs_on_cpu

    on_cpu = runs_on_cpu()
    use_int8 = int8 and bundle.has(INT8_FILE) and on_cpu
    preoptimized = not use_int8 and on_cpu and fits_this_cpu(bundle)
    name = INT8_FILE if use_int8 else OPTIMIZED_FILE if preoptimized else MODEL_FILE
    backend = OnnxRuntimeBackend(bundle.read_verified(name), threads=threads, preoptimized=preoptimized)
    if use_int8:
        backend.name += "-int8"
    problems = output_shape_problems(backend.output_shapes, bundle.manifest.outputs)
    if problems:
        backend.close()
        raise BackendError(f"the model does not match its manifest: {'; '.join(problems)}")
    reasons = {
        INT8_FILE: f"{INT8_FILE}, checked against FP32 at export",
        OPTIMIZED_FILE: f"{OPTIMIZED_FILE}, pre-optimised for this CPU",
    }
    return BackendSelection(backend, reasons.get(name, ""))


def select_backend(name: str, bundle: Bundle, threads: int | None = None) -> BackendSelection:
    """Open the backend ``name`` (``auto``, ``tensorrt`` or ``onnxruntime``) for ``bundle``. ``auto`` on a
    CPU runs the bundle's INT8 model when it has one; ``onnxruntime`` always runs the FP32 model."""
    if name == "onnxruntime":
        selection = _open_onnxruntime(bundle, threads)
        return BackendSelection(selection.backend, "; ".join(filter(None, ("asked for", selection.reason))))
    try:
        return _open_tensorrt(bundle)
    except _NoEngine as exc:
        if name == "tensorrt":
            raise EngineError(f"cannot use TensorRT: {exc}") from None
        selection = _open_onnxruntime(bundle, threads, int8=True)
        note = f"{selection.reason}; " if selection.reason else ""
        return BackendSelection(selection.backend, f"{note}TensorRT not used: {exc}")
