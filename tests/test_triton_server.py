"""A real Triton Inference Server serves the repository that ``svdh-export triton`` writes.

The server is NVIDIA's ``tritonserver`` with its Python backend (``scripts/setup-triton-cpu``); the tests
send radiograph files over HTTP and gRPC with ``tritonclient`` and compare every answer with ``svdh-run
--json`` on the same files. The ensemble's ``onnxruntime_onnx`` graph step runs through a Python stand-in
with the same inputs and outputs, as this server build has no onnxruntime backend.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import run_cli
from pacs_peers import wait_for
from svdh_runtime.bundle import default_bundle_path
from triton_server import TritonServer, file_bytes_input, missing_reason, required, triton_home, use_graph_standin

SCORE_TOLERANCE = 1e-3
CLIENTS = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    home = triton_home()
    if home is None:
        if required():
            pytest.fail(missing_reason())
        pytest.skip(missing_reason())
    work = tmp_path_factory.mktemp("triton")
    repo = work / "models"
    args = ("--repo", str(repo), "--ensemble", "onnxruntime_onnx", "--max-queue-delay-us", "5000")
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), *args)
    assert done.returncode == 0, done.stderr
    use_graph_standin(repo, "svdh_graph")
    with TritonServer(home, repo, work / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def films(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four phantom DICOM files, the packaged sample, and one phantom as an 8-bit PNG."""
    from PIL import Image

    from svdh_runtime.imageio import read_image

    chosen = sorted((phantoms / "images").glob("*.dcm"))[:4]
    folder = tmp_path_factory.mktemp("films")
    pixels = read_image(chosen[0]).pixels
    levels = np.clip((pixels - pixels.min()) / (np.ptp(pixels) or 1) * 255, 0, 255).astype(np.uint8)
    png = folder / "phantom.png"
    Image.fromarray(levels).save(png)
    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
    return [*chosen, sample, png]


@pytest.fixture(scope="module")
def expected(films: list[Path]) -> dict[str, dict]:
    """``svdh-run --json`` on the same files, keyed by file name."""
    done = run_cli("svdh-run", *map(str, films), "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["status"] for r in records] == ["ok"] * len(films)
    return {Path(r["source"]).name: r for r in records}


def _infer(client_module, url: str, model: str, payloads: list[bytes], request_id: str = ""):
    client = client_module.InferenceServerClient(url)
    return client.infer(model, [file_bytes_input(client_module, payloads)], request_id=request_id)


def _record(result, row: int = 0) -> dict:
    return json.loads(result.as_numpy("result_json")[row][0])


def _check_against_svdh_run(result, want: dict, row: int = 0) -> None:
    record = _record(result, row)
    assert abs(float(result.as_numpy("score")[row][0]) - want["score"]) <= SCORE_TOLERANCE
    assert abs(record["score"] - want["score"]) <= SCORE_TOLERANCE
    assert record["severity"]["class"] == want["severity"]["class"]
    probabilities = list(want["severity"]["probabilities"].values())
    assert np.allclose(result.as_numpy("severity_probs")[row], probabilities, atol=1e-4)
    assert abs(float(result.as_numpy("gate_distance")[row][0]) - want["input_gate"]["distance"]) <= 1e-3
    for end in ("low", "high"):  # rounded to 3 decimals on both sides: 1e-3 apart at most, plus the rounding
        assert abs(record["score_interval"][end] - want["score_interval"][end]) <= 2e-3
    areas = result.as_numpy("areas")[row]
    want_areas = [np.nan if v is None else v for v in want["areas"].values()]
    assert np.allclose(areas, want_areas, atol=1e-3, equal_nan=True)
    assert result.as_numpy("cam")[row].shape == (15, 18) and np.isfinite(result.as_numpy("cam")[row]).all()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["svdh", "svdh_ensemble"])
def test_served_answers_match_svdh_run(
    server: TritonServer, films: list[Path], expected: dict[str, dict], protocol: str, model: str
) -> None:
    url = server.http_url if protocol == "http" else server.grpc_url
    for film in films:
        result = _infer(CLIENTS[protocol], url, model, [film.read_bytes()], request_id=film.name)
        _check_against_svdh_run(result, expected[film.name])
        assert _record(result)["source"] == film.name and "patient" not in _record(result)


def test_one_request_may_carry_several_films_in_order(
    server: TritonServer, films: list[Path], expected: dict[str, dict]
) -> None:
    for model in ("svdh", "svdh_ensemble"):
        result = _infer(grpcclient, server.grpc_url, model, [f.read_bytes() for f in films[:3]])
        for row, film in enumerate(films[:3]):
            _check_against_svdh_run(result, expected[film.name], row)


def _noise_png() -> bytes:
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (900, 700), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("model", ["svdh", "svdh_ensemble"])
def test_bad_input_fails_only_its_own_request(
    server: TritonServer, films: list[Path], expected: dict[str, dict], model: str
) -> None:
    bad = {"garbage": (b"not an image at all" * 10, "not a DICOM"), "noise": (_noise_png(), "unlike the hand")}
    good = films[0]
    with ThreadPoolExecutor(max_workers=4) as pool:  # bad and good requests in the same dynamic batch
        futures = {name: pool.submit(_infer, httpclient, server.http_url, model, [data], name)
                   for name, (data, _) in bad.items()}  # fmt: skip
        good_future = pool.submit(_infer, httpclient, server.http_url, model, [good.read_bytes()], "good")
        for name, future in futures.items():
            with pytest.raises(InferenceServerException) as caught:
                future.result()
            message = str(caught.value)
            assert bad[name][1] in message and name in message and "Traceback" not in message
        _check_against_svdh_run(good_future.result(), expected[good.name])
    assert httpclient.InferenceServerClient(server.http_url).is_server_ready()


def _success_count(server: TritonServer, model: str) -> int:
    match = re.search(rf'^nv_inference_request_success\{{model="{model}",version="1"\}} (\d+)', server.metrics(), re.M)
    return int(match.group(1)) if match else 0


def test_load_eight_clients_every_response_matched_and_counted(
    server: TritonServer, films: list[Path], expected: dict[str, dict]
) -> None:
    clients, per_client = 8, 25
    payloads = [f.read_bytes() for f in films]
    counted_before = _success_count(server, "svdh")

    def one_client(number: int) -> list[tuple[str, str, float, str]]:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        answers = []
        for k in range(per_client):
            index = (number * per_client + k) % len(films)
            request_id = f"client{number}-request{k}-{films[index].name}"
            tensor = file_bytes_input(grpcclient, [payloads[index]])
            result = client.infer("svdh", [tensor], request_id=request_id)
            answered_id = result.get_response().id
            answers.append((request_id, answered_id, float(result.as_numpy("score")[0][0]), _record(result)["source"]))
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = [a for batch in pool.map(one_client, range(clients)) for a in batch]
    elapsed = time.perf_counter() - started
    assert len(answers) == clients * per_client
    for request_id, answered_id, score, source in answers:
        film = request_id.split("-", 2)[2]
        assert answered_id == request_id and source == request_id
        assert abs(score - expected[film]["score"]) <= SCORE_TOLERANCE, request_id
    counted = counted_before + len(answers)
    wait_for(lambda: _success_count(server, "svdh") >= counted, 10, "the metrics to count every request")
    assert _success_count(server, "svdh") == counted
    print(f"{len(answers)} requests from {clients} clients in {elapsed:.1f} s")


def test_a_damaged_bundle_copy_is_refused_at_load(tmp_path: Path) -> None:
    home = triton_home()
    if home is None:
        pytest.skip(missing_reason())
    repo = tmp_path / "models"
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), "--repo", str(repo))
    assert done.returncode == 0, done.stderr
    model = repo / "svdh" / "1" / "bundle" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    server = TritonServer(home, repo, tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout=120)
    assert "checksum mismatch for model.onnx" in server.log_tail(20000)
    shutil.rmtree(repo)
