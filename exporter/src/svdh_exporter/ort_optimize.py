"""Pre-optimise a bundle's model for this kind of CPU (``svdh-export ort-optimize``).

ONNX Runtime optimises the graph fully (``ORT_ENABLE_ALL``) once, here, and the result is stored in the
bundle as ``model.ort-cpu.onnx`` (checksummed like the rest), with the CPU signature it was made for in the
manifest's provenance. ``svdh-run`` on a CPU with the same signature opens it without optimising again (a
quicker start; :mod:`svdh_runtime.backends.cpu_optimized`). It must give the FP32 model's outputs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.backends.cpu_optimized import OPTIMIZED_FILE, PROVENANCE_KEY, cpu_signature
from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.errors import SvdhError

from .fp16 import add_checked_model

MAX_ABS_DIFFERENCE = 1e-4  # on every output: the same FP32 graph, rearranged
CHECK_BATCH = 4
TIMING_ROUNDS = 3


class OptimizeError(SvdhError):
    """The pre-optimised model cannot be made here, or does not reproduce the model."""


def optimize(model_bytes: bytes) -> bytes:
    """``model_bytes`` fully optimised by ONNX Runtime for this CPU."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="svdh-ort-") as work:
        target = Path(work) / OPTIMIZED_FILE
        options = ort.SessionOptions()
        options.log_severity_level = 3  # it warns that the result is hardware-specific: that is the point
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        return target.read_bytes()


def _start_seconds(model_bytes: bytes, preoptimized: bool) -> float:
    rounds = []
    for _ in range(TIMING_ROUNDS):
        started = time.perf_counter()
        OnnxRuntimeBackend(model_bytes, providers=["CPUExecutionProvider"], preoptimized=preoptimized).close()
        rounds.append(time.perf_counter() - started)
    return round(statistics.median(rounds), 4)


def write_cpu_optimized(bundle_dir: Path, say: Callable[[str], None] = lambda _: None) -> dict:
    """Make, check and add ``model.ort-cpu.onnx`` to the bundle; returns the check (also in its provenance)."""
    bundle = load_bundle(bundle_dir)
    signature = cpu_signature()
    if signature is None:
        raise OptimizeError("this machine's CPU features cannot be read (/proc/cpuinfo): nothing to key the model on")
    source = bundle.model_bytes
    say(f"optimising model.onnx for {signature['machine']} with {' '.join(signature['vector_extensions'])}")
    optimized = optimize(source)
    spec = bundle.manifest.preprocessing
    batch = np.random.default_rng(0).standard_normal((CHECK_BATCH, 1, spec.height, spec.width)).astype(np.float32)
    want = OnnxRuntimeBackend(source, providers=["CPUExecutionProvider"]).infer(batch)
    got = OnnxRuntimeBackend(optimized, preoptimized=True).infer(batch)
    if set(want) != set(got):
        raise OptimizeError(f"the optimised model's outputs differ: {sorted(got)} against {sorted(want)}")
    difference = max(float(np.abs(want[name] - got[name]).max()) for name in want)
    if not difference <= MAX_ABS_DIFFERENCE:
        raise OptimizeError(f"the optimised model differs from model.onnx by {difference:.2e} (> {MAX_ABS_DIFFERENCE})")
    check = {
        "signature": signature,
        "source_sha256": bundle.model_sha256,
        "max_abs_difference": difference,
        "session_start_s": {
            "model.onnx": _start_seconds(source, False),
            OPTIMIZED_FILE: _start_seconds(optimized, True),
        },
    }
    add_checked_model(bundle, OPTIMIZED_FILE, optimized, PROVENANCE_KEY, check)
    return check
