"""Batch throughput and cold start, whole processes, against the bare loop (``bare_loop.py``) on the same
images in the same rounds; and the INT8 model's time against FP32.

Each round runs the bare loop, ``svdh-run FOLDER --json`` and ``svdh-run FOLDER --out DIR`` back to back on
60 phantoms (realism 2); the gate (``gate.py``) compares the fastest round of each.
Run: ``python3 benchmarks/gate.py``; not part of the test suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE, THREADS
from svdh_runtime.bundle import Bundle, default_bundle_path

HERE = Path(__file__).resolve().parent
IMAGES = 60
ROUNDS = 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 phantom radiographs (DICOM, 16-bit, uncompressed)."""
    from svdh_trainer.phantom.generate import generate

    out = tmp_path_factory.mktemp("throughput")
    generate(out, IMAGES, 3, workers=0)
    return out / "images"


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _run(*arguments: str) -> list[str]:
    code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.entry import main; main()"
    return [sys.executable, "-c", code, *arguments]


def _bare(*inputs: Path) -> list[str]:
    return [sys.executable, str(HERE / "bare_loop.py"), str(default_bundle_path()), *map(str, inputs)]


def test_batch_throughput(benchmark, folder: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Seconds for 60 images: the bare loop, ``--json`` and ``--out`` in each round (``extra_info``)."""
    times: dict[str, list[float]] = {"bare": [], "json": [], "out": []}
    out = tmp_path / "out"

    def one_round() -> None:
        times["bare"].append(_seconds(_bare(folder)))
        times["json"].append(_seconds(_run(str(folder), "--json")))
        shutil.rmtree(out, ignore_errors=True)
        times["out"].append(_seconds(_run(str(folder), "--out", str(out))))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    for name, values in times.items():
        benchmark.extra_info[f"{name}_s"] = [round(v, 4) for v in values[-ROUNDS:]]
    benchmark.extra_info["images"] = IMAGES


def test_cold_start_against_bare_script(benchmark) -> None:  # noqa: ANN001
    """``svdh-run sample.dcm`` against the bare script on the same file, whole processes, each round."""
    times: dict[str, list[float]] = {"bare": [], "svdh_run": []}

    def one_round() -> None:
        times["bare"].append(_seconds(_bare(SAMPLE)))
        times["svdh_run"].append(_seconds(_run(str(SAMPLE))))

    benchmark.pedantic(one_round, rounds=9, iterations=1, warmup_rounds=1)
    for name, values in times.items():
        benchmark.extra_info[f"{name}_s"] = [round(v, 4) for v in values[-9:]]


def test_warm_process_against_cold(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    """``svdh-run --warm sample.dcm`` (a warm ``svdh-run serve-local`` answers) against a cold
    ``svdh-run sample.dcm``, whole processes, each round."""
    import os

    socket_path = tmp_path / "warm.sock"
    env = {**os.environ, "SVDH_WARM_SOCKET": str(socket_path)}
    server = subprocess.Popen(_run("serve-local"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lines = [server.stderr.readline() for _ in range(2)]  # the backend line, then "ready at"
        assert b"ready at" in lines[-1], lines
        warm = _run("--warm", str(SAMPLE))
        times: dict[str, list[float]] = {"cold": [], "warm": []}

        def one_round() -> None:
            times["cold"].append(_seconds(_run(str(SAMPLE))))
            started = time.perf_counter()
            subprocess.run(warm, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            times["warm"].append(time.perf_counter() - started)

        benchmark.pedantic(one_round, rounds=9, iterations=1, warmup_rounds=1)
        for name, values in times.items():
            benchmark.extra_info[f"{name}_s"] = [round(v, 4) for v in values[-9:]]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def int8_model(bundle: Bundle) -> bytes:
    """The default model with every convolution INT8 (its speed; whether it is accurate enough to ship is
    ``svdh-export int8``'s check)."""
    from svdh_exporter.fp16 import calibration_batch
    from svdh_exporter.int8 import quantize

    return quantize(bundle.model_bytes, calibration_batch([SAMPLE], None))


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cpu_model_time(benchmark, bundle: Bundle, int8_model: bytes, canvas, precision: str, batch: int) -> None:  # noqa: ANN001
    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend

    model = int8_model if precision == "int8" else bundle.model_bytes
    backend = OnnxRuntimeBackend(model, threads=THREADS, providers=["CPUExecutionProvider"])
    images = np.repeat(canvas, batch, axis=0)
    backend.infer(images)
    benchmark(backend.infer, images)
