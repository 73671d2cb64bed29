"""A real Triton Inference Server for the tests and benchmarks, from ``scripts/setup-triton-cpu``.

``SVDH_TRITON_HOME`` (default ``.triton`` in the repository) holds ``tritonserver/`` (the server, its Python
backend and libraries) and ``python/`` (the models' environment). The server binds 127.0.0.1 only, on free
ports, with its own shared-memory prefix, and is stopped with the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from pacs_peers import free_port

REPO = Path(__file__).resolve().parents[1]
# Stand-in for Triton's onnxruntime backend in the ensemble's graph step (this server build has only the Python
# backend): runs the step's own model.onnx with ONNX Runtime, with the same inputs and outputs. Written as the
# step's model.py after svdh-export's PYTHONPATH preamble.
GRAPH_STANDIN = """import json
from pathlib import Path

import onnxruntime
from svdh_runtime.triton_models import backend_utils

pb_utils = backend_utils()


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.outputs = [output["name"] for output in json.loads(args["model_config"])["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            values = self.session.run(self.outputs, {"image": image})
            tensors = [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, values)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


def triton_home() -> Path | None:
    """The set-up server folder, or None when there is none."""
    home = Path(os.environ.get("SVDH_TRITON_HOME") or REPO / ".triton")
    ready = (home / "tritonserver" / "bin" / "tritonserver").is_file() and (home / "python" / "bin").is_dir()
    return home if ready else None


def missing_reason() -> str:
    return "no Triton server set up: run scripts/setup-triton-cpu (or set SVDH_TRITON_HOME)"


def required() -> bool:
    """CI sets the server up, so there its absence is a failure rather than a skip."""
    return os.environ.get("SVDH_REQUIRE_TRITON") == "1"


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _site_packages(python_home: Path) -> Path:
    found = sorted(python_home.glob("lib/python3*/site-packages"))
    if not found:
        raise RuntimeError(f"{python_home}: no site-packages")
    return found[0]


def use_graph_standin(repo: Path, graph_model: str) -> None:
    """Serve the ensemble's ``onnxruntime_onnx`` graph step with a Python model that runs the same
    ``model.onnx`` through ONNX Runtime, with the same inputs and outputs (this server build has only the
    Python backend)."""
    model = repo / graph_model
    config = (model / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config
    from svdh_exporter.triton import PYTHONPATH_PREAMBLE

    (model / "config.pbtxt").write_text(config.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (model / "1" / "model.py").write_text(PYTHONPATH_PREAMBLE + "\n" + GRAPH_STANDIN)


def file_bytes_input(client_module, payloads: list[bytes]):  # noqa: ANN001, ANN201
    """The ``image_bytes`` input of one request carrying ``payloads`` (tritonclient.http or .grpc)."""
    import numpy as np

    data = np.array([[p] for p in payloads], dtype=np.object_)
    tensor = client_module.InferInput("image_bytes", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


class TritonServer:
    """``tritonserver`` on a model repository; a context manager."""

    def __init__(self, home: Path, repo: Path, log_path: Path) -> None:
        self.home, self.repo, self.log_path = home, repo, log_path
        self.http_port, self.grpc_port, self.metrics_port = _free_ports(3)
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def start(self, timeout: float = 180.0) -> TritonServer:
        server = self.home / "tritonserver"
        libpython = (server / "libpython_dir").read_text().strip()
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join([libpython, str(server / "lib")]),
            "PYTHONPATH": str(_site_packages(self.home / "python")),
        }
        command = [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={server / 'backends'}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--backend-config=python,shm-region-prefix-name=svdh{uuid.uuid4().hex[:12]}",
            "--exit-on-error=true",
            "--log-verbose=0",
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_bytes()[-characters:].decode(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and its Python stubs
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
