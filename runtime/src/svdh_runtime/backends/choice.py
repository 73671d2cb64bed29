"""The backends a user can ask for by name (kept import-light for the command line)."""

from __future__ import annotations

from enum import Enum


class BackendChoice(str, Enum):
    """``auto``: a TensorRT engine that matches this GPU, else ONNX Runtime (CUDA when installed, else CPU)."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"
