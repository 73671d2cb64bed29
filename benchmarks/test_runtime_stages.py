"""Latency of the runtime's stages on the shipped sample with the default bundle.

Run: ``python3 -m pytest benchmarks --benchmark-only`` (not part of the test suite).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.overlay import render_overlay
from svdh_runtime.preprocess import prepare
from svdh_runtime.scoring import Scorer

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    bundle = load_bundle()
    return Scorer(bundle, create_backend("onnxruntime", bundle, threads=2))


def test_read_dicom(benchmark) -> None:  # noqa: ANN001
    benchmark(read_image, SAMPLE)


def test_preprocess(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    pixels = read_image(SAMPLE).pixels
    benchmark(prepare, pixels, scorer.bundle.manifest.preprocessing)


def test_inference_batch1(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    canvas = prepare(read_image(SAMPLE).pixels, scorer.bundle.manifest.preprocessing).canvas[None, None]
    benchmark(scorer.backend.infer, canvas)


def test_overlay(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    result = scorer.score_file(SAMPLE)
    benchmark(render_overlay, result, scorer.bundle.manifest)


def test_warm_end_to_end(benchmark, scorer: Scorer) -> None:  # noqa: ANN001
    benchmark(scorer.score_file, SAMPLE)


def test_cold_process(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    command = [sys.executable, "-m", "svdh_runtime", str(SAMPLE), "--out", str(tmp_path)]
    benchmark.pedantic(lambda: subprocess.run(command, check=True, capture_output=True), rounds=5, iterations=1)
