"""ONNX Runtime backend (CPU by default; CUDA when onnxruntime-gpu provides it)."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError
from .base import OPTIONAL_OUTPUTS, OUTPUT_NAMES


def runs_on_cpu() -> bool:
    """Whether ONNX Runtime runs on the CPU here (no CUDA execution provider installed)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" not in ort.get_available_providers()


class OnnxRuntimeBackend:
    """An ONNX Runtime session over model bytes that were already checksum-verified."""

    def __init__(
        self,
        model_bytes: bytes,
        threads: int | None = None,
        providers: list[str] | None = None,
        preoptimized: bool = False,
    ) -> None:
        """``preoptimized``: the model was optimised for this CPU already (:mod:`.cpu_optimized`): no graph
        optimisation at start, CPU only."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if preoptimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            providers = ["CPUExecutionProvider"]
        if threads:
            options.intra_op_num_threads = threads
        # Several sessions in one process slow each other badly when threads spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(model_bytes, sess_options=options, providers=chosen)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime cannot load the model ({' '.join(str(exc).split())[:200]})") from None
        outputs = [o.name for o in self._session.get_outputs()]
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise BackendError(f"model lacks output(s) {', '.join(missing)}; found {', '.join(outputs)}")
        self._outputs = [*OUTPUT_NAMES, *(n for n in OPTIONAL_OUTPUTS if n in outputs)]
        declared = {o.name: tuple(o.shape) for o in self._session.get_outputs()}
        self.output_shapes = {name: declared[name] for name in self._outputs}  # symbolic dimensions as str
        self._input = self._session.get_inputs()[0].name
        provider = self._session.get_providers()[0]
        self.name = "onnxruntime-cuda" if provider == "CUDAExecutionProvider" else "onnxruntime-cpu"

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._outputs, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed ({' '.join(str(exc).split())[:200]})") from None
        return dict(zip(self._outputs, values))

    def close(self) -> None:
        self._session = None
