"""Latency of the runtime's stages on the shipped sample with the default bundle (ONNX Runtime CPU).

Run: ``python3 benchmarks/gate.py`` (runs these and checks the ratios); not part of the test suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE, THREADS
from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
from svdh_runtime.bundle import Bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.overlay import render_overlay
from svdh_runtime.preprocess import prepare_loaded
from svdh_runtime.scoring import Scorer


@pytest.fixture(scope="module")
def scorer(bundle: Bundle) -> Scorer:
    return Scorer(bundle, OnnxRuntimeBackend(bundle.model_bytes, threads=THREADS, providers=["CPUExecutionProvider"]))


def test_read_dicom(benchmark) -> None:  # noqa: ANN001
    benchmark(read_image, SAMPLE)


def test_preprocess(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    image = read_image(SAMPLE)
    benchmark(prepare_loaded, image, scorer.bundle.manifest.preprocessing)


def test_inference_batch1(benchmark, scorer: Scorer, canvas) -> None:  # noqa: ANN001
    benchmark(scorer.backend.infer, canvas)


def test_postprocess_and_overlay(benchmark, scorer: Scorer, canvas) -> None:  # noqa: ANN001
    result = scorer.score_file(SAMPLE)
    outputs = scorer.backend.infer(canvas)

    def postprocess() -> object:
        result.prediction = scorer.predict(outputs, result)
        return render_overlay(result, scorer.bundle.manifest)

    benchmark(postprocess)


def test_warm_end_to_end(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    benchmark(scorer.score_file, SAMPLE)


def test_warm_overhead_paired(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    """Each round: read, preprocess and the bare backend call timed one by one, then the runtime's whole
    ``score_file``, back to back, so that the ratio compares runs made at the same moment (a shared machine's
    speed drifts during a benchmark session)."""
    import time

    spec = scorer.bundle.manifest.preprocessing
    pairs: list[tuple[float, float]] = []

    def one_round() -> None:
        started = time.perf_counter()
        image = read_image(SAMPLE)
        prepared = prepare_loaded(image, spec)
        scorer.backend.infer(prepared.canvas[None, None])
        parts_done = time.perf_counter()
        scorer.score_file(SAMPLE)
        pairs.append((parts_done - started, time.perf_counter() - parts_done))

    benchmark.pedantic(one_round, rounds=25, iterations=1, warmup_rounds=2)
    benchmark.extra_info["parts_s"] = [round(p, 6) for p, _ in pairs[-25:]]
    benchmark.extra_info["end_to_end_s"] = [round(e, 6) for _, e in pairs[-25:]]


def _cold(benchmark, *arguments: str, image: Path = SAMPLE) -> None:  # noqa: ANN001
    command = [sys.executable, "-m", "svdh_runtime", str(image), *arguments]
    benchmark.pedantic(
        lambda: subprocess.run(command, check=True, capture_output=True), rounds=7, iterations=1, warmup_rounds=1
    )


def test_cold_process(benchmark) -> None:  # noqa: ANN001
    """``svdh-run sample.dcm`` as a whole process: score and severity printed (the gated promise)."""
    _cold(benchmark)


def test_cold_process_with_outputs(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    """The same with ``--out``: overlay PNG, JSON, results log, summary and HTML report written too."""
    _cold(benchmark, "--out", str(tmp_path), "--rescore")


def test_cold_process_jpeg2000(benchmark, sample_jpeg2000: Path) -> None:  # noqa: ANN001
    """``svdh-run`` on a 2500x2000 JPEG 2000 lossless DICOM (decoded at resolution level 1)."""
    _cold(benchmark, image=sample_jpeg2000)
