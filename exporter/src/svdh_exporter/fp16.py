"""Mixed-precision ONNX for TensorRT: FP16 weights and compute, FP32 inputs, outputs and sensitive ops.

Made with onnxconverter-common. Two fix-ups keep ONNX Runtime and the
outputs' types right: every graph output goes through an Identity before
conversion (so the converter can cast it back to FP32), and reductions,
softmax and normalisations stay FP32. The result must match the FP32 model
on calibration images before it is kept.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from svdh_runtime.backends import Backend
from svdh_runtime.bundle import Bundle, load_bundle, sha256_file
from svdh_runtime.errors import BundleError, MissingDependencyError, SvdhError
from svdh_runtime.files import atomic_write_bytes
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import MANIFEST_NAME
from svdh_runtime.preprocess import prepare_loaded

FP16_FILE = "model.fp16.onnx"
FP32_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "Softmax", "LayerNormalization", "Erf", "Exp")
MAX_SCORE_DIFF = 0.5
MAX_PROBS_DIFF = 0.01
MIN_CAM_CORRELATION = 0.99
MAX_GATE_RELATIVE_DIFF = 0.02  # the input gate's distance, where the model has one


class PrecisionError(SvdhError):
    """The FP16 model does not reproduce the FP32 one within tolerance."""


def _route_outputs_through_identity(model) -> None:  # noqa: ANN001
    for output in model.graph.output:
        inner = f"{output.name}__fp32_pre_identity"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.node.append(__import__("onnx").helper.make_node("Identity", [inner], [output.name]))


def to_mixed_precision(model):  # noqa: ANN001, ANN201
    """An FP16 copy of an FP32 ONNX model with FP32 inputs, outputs and sensitive ops."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError(
            "FP16 conversion needs onnxconverter-common: pip install onnxconverter-common"
        ) from None
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _route_outputs_through_identity(model)
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    with warnings.catch_warnings():  # it warns for every weight it clips into FP16 range
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    onnx.checker.check_model(converted)
    for value in [*converted.graph.input, *converted.graph.output]:
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise PrecisionError(f"mixed-precision model's {value.name} is not float32")
    return converted


def calibration_batch(files: Iterable[Path], bundle_dir: Path | None) -> np.ndarray:
    """Prepared canvases of calibration images (the bundle's own preprocessing)."""
    spec = load_bundle(bundle_dir).manifest.preprocessing
    canvases = [prepare_loaded(read_image(Path(f)), spec).canvas for f in files]
    if not canvases:
        raise BundleError("no calibration images given")
    return np.stack(canvases)[:, None]


def compare_backends(reference: Backend, candidate: Backend, batch: np.ndarray) -> dict[str, float]:
    """Largest score and probability differences and the lowest CAM correlation of two backends over ``batch``."""
    correlations, score_diff, probs_diff, gate_diff = [], 0.0, 0.0, None
    for start in range(0, len(batch), 8):
        want, got = reference.infer(batch[start : start + 8]), candidate.infer(batch[start : start + 8])
        score_diff = max(score_diff, float(np.abs(want["score"] - got["score"]).max()))
        probs_diff = max(probs_diff, float(np.abs(want["severity_probs"] - got["severity_probs"]).max()))
        if "ood_distance" in want:
            relative = np.abs(want["ood_distance"] - got["ood_distance"]) / np.maximum(want["ood_distance"], 1e-6)
            gate_diff = max(gate_diff or 0.0, float(relative.max()))
        for a, b in zip(want["cam"], got["cam"]):
            if a.max() > 0 and a.std() > 0 and b.std() > 0:
                correlations.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
    check = {
        "max_score_diff": round(score_diff, 4),
        "max_probs_diff": round(probs_diff, 5),
        "min_cam_correlation": round(min(correlations), 5) if correlations else 1.0,
        "images": int(len(batch)),
    }
    if gate_diff is not None:
        check["max_gate_relative_diff"] = round(gate_diff, 5)
    return check


def compare(fp32_bytes: bytes, fp16_bytes: bytes, batch: np.ndarray) -> dict[str, float]:
    """:func:`compare_backends` of two ONNX models under ONNX Runtime."""
    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend

    return compare_backends(OnnxRuntimeBackend(fp32_bytes), OnnxRuntimeBackend(fp16_bytes), batch)


def within_tolerance(check: dict[str, float]) -> bool:
    """Score within 0.5 points, probabilities within 0.01, CAM correlation at least 0.99, gate distance within 2 %."""
    return (
        check["max_score_diff"] <= MAX_SCORE_DIFF
        and check["max_probs_diff"] <= MAX_PROBS_DIFF
        and check["min_cam_correlation"] >= MIN_CAM_CORRELATION
        and check.get("max_gate_relative_diff", 0.0) <= MAX_GATE_RELATIVE_DIFF
    )


def write_fp16(bundle_dir: Path, calibration: list[Path]) -> dict[str, float]:
    """Add ``model.fp16.onnx`` to a bundle after checking it against the FP32 model; returns the check."""
    import onnx

    bundle = load_bundle(bundle_dir)
    converted = to_mixed_precision(onnx.ModelProto.FromString(bundle.model_bytes))
    fp16_bytes = converted.SerializeToString()
    check = compare(bundle.model_bytes, fp16_bytes, calibration_batch(calibration, bundle_dir))
    if not within_tolerance(check):
        raise PrecisionError(f"FP16 model is outside tolerance ({check}); not written")
    add_checked_model(bundle, FP16_FILE, fp16_bytes, "fp16_check", check)
    return check


def add_checked_model(bundle: Bundle, name: str, data: bytes, check_key: str, check: dict) -> None:
    """Write a model variant into the bundle (atomically) and list it in the manifest with its sha256 and the
    check it passed (``provenance[check_key]``)."""
    target = Path(bundle.path) / name
    atomic_write_bytes(target, data)
    manifest = dataclasses.replace(
        bundle.manifest,
        files={**bundle.manifest.files, name: sha256_file(target)},
        provenance={**bundle.manifest.provenance, check_key: check},
    )
    manifest.write(Path(bundle.path) / MANIFEST_NAME)
