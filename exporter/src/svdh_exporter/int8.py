"""INT8 for CPU boxes: ONNX Runtime static quantization of a bundle's model, calibrated on radiographs.

QDQ format, per-channel INT8 weights, UINT8 activations (ONNX Runtime's
fast path on x86 CPUs), calibrated with the bundle's own preprocessing. Only
the backbones' convolutions are quantized: the heads, the CAM path (the
gradient of the score with respect to the last feature map) and the input
gate's distance stay FP32. Where quantizing the last convolutions moves the
CAM or the gate distance beyond tolerance, those convolutions are left FP32
too: the attempts go from "every convolution" to "all but the last k"
(k = 1, 2, 4, ...), and the first that reproduces the FP32 model within the
FP16 tolerances (:mod:`svdh_exporter.fp16`) is kept, and only if it is faster
than FP32 on this machine.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from svdh_runtime.bundle import INT8_FILE, load_bundle
from svdh_runtime.errors import MissingDependencyError, SvdhError

from .fp16 import add_checked_model, calibration_batch, compare, within_tolerance

QUANTIZED_OPS = ("Conv",)
MAX_SPEED_RATIO = 1.0  # INT8 model time / FP32 model time, batch 1, on this machine: kept only when faster
TIMING_ROUNDS = 15


class Int8Error(SvdhError):
    """No INT8 model reproduces the FP32 one within tolerance, or none is faster."""


def _quantization():  # noqa: ANN202
    try:
        from onnxruntime import quantization
    except ImportError:  # pragma: no cover - onnxruntime ships it
        raise MissingDependencyError("INT8 needs onnxruntime's quantization tools (onnxruntime>=1.17)") from None
    return quantization


def conv_nodes(model_bytes: bytes) -> list[str]:
    """Names of the model's convolutions, in graph (topological) order."""
    import onnx

    return [node.name for node in onnx.ModelProto.FromString(model_bytes).graph.node if node.op_type == "Conv"]


def quantize(fp32_bytes: bytes, batch: np.ndarray, keep_fp32: Iterable[str] = ()) -> bytes:
    """The INT8 (QDQ) model of ``fp32_bytes``, calibrated on ``batch``; ``keep_fp32``: nodes left FP32."""
    import onnx

    quantization = _quantization()
    input_name = onnx.ModelProto.FromString(fp32_bytes).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="svdh-int8-") as work:
        source, prepared, target = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32_bytes)
        # Shape inference and graph clean-up, as ONNX Runtime advises before static quantization.
        quantization.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)

        class Canvases(quantization.CalibrationDataReader):
            """Prepared canvases, one image at a time."""

            def __init__(self) -> None:
                self._items = iter([{input_name: image[None].astype(np.float32)} for image in batch])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self._items, None)

        quantization.quantize_static(
            str(prepared),
            str(target),
            Canvases(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=list(keep_fp32),
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        return target.read_bytes()


def model_time(model_bytes: bytes, image: np.ndarray, batch: int, rounds: int = TIMING_ROUNDS) -> float:
    """Fastest of ``rounds`` ONNX Runtime CPU calls on a batch of ``batch`` copies of ``image`` (seconds)."""
    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(model_bytes, providers=["CPUExecutionProvider"])
    inputs = np.repeat(image[None], batch, axis=0)
    backend.infer(inputs)  # warm-up
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        backend.infer(inputs)
        best = min(best, time.perf_counter() - started)
    backend.close()
    return best


def attempts(convolutions: list[str]) -> list[list[str]]:
    """The convolutions to keep FP32, tried in turn: none, then the last 1, 2, 4, ... (up to half of them)."""
    kept, k = [[]], 1
    while k <= len(convolutions) // 2:
        kept.append(convolutions[-k:])
        k *= 2
    return kept


def find_int8(fp32_bytes: bytes, batch: np.ndarray, say: Callable[[str], None] = lambda _: None) -> tuple[bytes, dict]:
    """The first INT8 model of :func:`attempts` within tolerance of FP32 on ``batch``, and its check."""
    convolutions = conv_nodes(fp32_bytes)
    if not convolutions:
        raise Int8Error("the model has no convolutions to quantize")
    checks = []
    for keep in attempts(convolutions):
        candidate = quantize(fp32_bytes, batch, keep)
        check = compare(fp32_bytes, candidate, batch)
        check["fp32_convolutions"] = len(keep)
        check["int8_convolutions"] = len(convolutions) - len(keep)
        checks.append(check)
        verdict = "within tolerance" if within_tolerance(check) else "outside tolerance"
        say(f"INT8 with the last {len(keep)} of {len(convolutions)} convolutions kept FP32: {verdict} {check}")
        if within_tolerance(check):
            return candidate, check
    raise Int8Error(f"no INT8 model reproduces the FP32 model within tolerance (tried: {checks}); not written")


def write_int8(
    bundle_dir: Path,
    calibration: list[Path],
    say: Callable[[str], None] = lambda _: None,
    require_faster: bool = True,
) -> dict:
    """Add ``model.int8.onnx`` to a bundle when it passes the check and (``require_faster``) is faster here;
    returns the check, with the measured speed."""
    bundle = load_bundle(bundle_dir)
    batch = calibration_batch(calibration, bundle_dir)
    int8_bytes, check = find_int8(bundle.model_bytes, batch, say)
    speed = {}
    for size in (1, 8):
        fp32_s, int8_s = (model_time(m, batch[0], size) for m in (bundle.model_bytes, int8_bytes))
        speed[f"batch{size}"] = {"fp32_ms": round(fp32_s * 1e3, 2), "int8_ms": round(int8_s * 1e3, 2),
                                 "ratio": round(int8_s / fp32_s, 3)}  # fmt: skip
    check["speed_cpu"] = speed
    if require_faster and speed["batch1"]["ratio"] >= MAX_SPEED_RATIO:
        raise Int8Error(f"the INT8 model is no faster than FP32 on this CPU ({speed['batch1']}); not written")
    add_checked_model(bundle, INT8_FILE, int8_bytes, "int8_check", check)
    return check
