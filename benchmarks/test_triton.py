"""Triton Inference Server: latency (p50, p99) and throughput of the ``svdh`` model over gRPC at concurrency 1
and 8, on 20 phantom radiographs sent as DICOM bytes. Reported by ``gate.py``, not gated.

Needs a server set up by ``scripts/setup-triton-cpu`` (``SVDH_TRITON_HOME``); skipped without one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from svdh_runtime.bundle import default_bundle_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from triton_server import TritonServer, file_bytes_input, missing_reason, triton_home  # noqa: E402

IMAGES = 20
REQUESTS_PER_CLIENT = {1: 40, 8: 10}


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    from svdh_trainer.phantom.generate import generate

    out = tmp_path_factory.mktemp("triton-films")
    generate(out, IMAGES, 3, workers=0)
    return [path.read_bytes() for path in sorted((out / "images").glob("*.dcm"))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    from svdh_exporter.triton import TritonOptions, write_triton_repository

    home = triton_home()
    if home is None:
        pytest.skip(missing_reason())
    work = tmp_path_factory.mktemp("triton")
    repo = work / "models"
    write_triton_repository(default_bundle_path(), repo, TritonOptions(max_queue_delay_us=2000))
    with TritonServer(home, repo, work / "server.log") as running:
        yield running


def _client_run(url: str, payloads: list[bytes], start: int, count: int) -> list[float]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    latencies = []
    for k in range(count):
        tensor = file_bytes_input(grpcclient, [payloads[(start + k) % len(payloads)]])
        began = time.perf_counter()
        client.infer("svdh", [tensor])
        latencies.append(time.perf_counter() - began)
    return latencies


@pytest.mark.parametrize("concurrency", [1, 8])
def test_triton_served_latency(benchmark, server: TritonServer, payloads: list[bytes], concurrency: int) -> None:  # noqa: ANN001
    """Seconds for all requests at this concurrency; per-request latencies and throughput in ``extra_info``."""
    _client_run(server.grpc_url, payloads, 0, 4)  # warm: the model's first calls
    per_client = REQUESTS_PER_CLIENT[concurrency]
    latencies: list[float] = []
    elapsed: list[float] = []

    def run() -> None:
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            runs = pool.map(
                lambda c: _client_run(server.grpc_url, payloads, c * per_client, per_client), range(concurrency)
            )
            latencies.extend(v for values in runs for v in values)
        elapsed.append(time.perf_counter() - began)

    benchmark.pedantic(run, rounds=1, iterations=1)
    requests = concurrency * per_client
    benchmark.extra_info.update(
        requests=requests,
        p50_ms=round(float(np.percentile(latencies, 50)) * 1000, 1),
        p99_ms=round(float(np.percentile(latencies, 99)) * 1000, 1),
        requests_per_s=round(requests / elapsed[0], 2),
    )
