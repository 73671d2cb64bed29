"""dcmtk peers and the node as its own process, shared by the PACS-node tests.

dcmtk's ``storescu``/``echoscu`` send and ``storescp`` receives the results
(Debian package ``dcmtk``; ``.ci/run`` installs it). pynetdicom installs Python
apps of the same names, so the tools are found by asking each for its version.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def _dcmtk(tool: str) -> str | None:
    """dcmtk's own ``tool`` on PATH."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            done = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30)
            if "dcmtk" in (done.stdout + done.stderr).lower():
                return str(candidate)
    return None


TOOLS = {tool: _dcmtk(tool) for tool in ("storescu", "storescp", "echoscu")}
needs_dcmtk = pytest.mark.skipif(
    None in TOOLS.values(),
    reason="needs dcmtk's storescu, storescp and echoscu (apt-get install dcmtk; .ci/run installs it)",
)
STORESCU, STORESCP, ECHOSCU = TOOLS["storescu"], TOOLS["storescp"], TOOLS["echoscu"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Receiver:
    """dcmtk's storescp, standing in for the PACS that receives the results (``options``: more storescp
    options, e.g. ``+tls``, or ``+uf`` to keep every copy of an instance received twice)."""

    def __init__(self, folder: Path, port: int | None = None, *options: str) -> None:
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [STORESCP, *options, "--output-directory", str(folder), "-aet", "RECV", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Node:
    """``svdh-run serve`` as a separate process, forwarding to ``receiver``."""

    def __init__(
        self, spool: Path, receiver: Receiver, port: int | None = None, *extra: str, memory_cap: int | None = None
    ) -> None:
        """``memory_cap``: the node's address space in bytes (``RLIMIT_AS``), as on a box short of memory."""
        self.spool, self.port = spool, port or free_port()
        code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.cli import main; main()"
        command = [sys.executable, "-c", code, "serve", "--port", str(self.port), "--spool", str(spool)]
        command += ["--forward", f"127.0.0.1:{receiver.port}:RECV", "--threads", "1", *extra]
        self.log = spool.parent / f"node-{time.monotonic_ns()}.log"

        def cap() -> None:
            if memory_cap is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

        with self.log.open("w") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=cap)
        wait_for(self._started, 60, "the node to listen")

    def _started(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        return "listening as" in self.log.read_text()

    def send(self, folder: Path, *options: str, called: str = "SVDH") -> subprocess.CompletedProcess:
        command = [STORESCU, "-aec", called, *options, "+sd", "+r", "127.0.0.1", str(self.port), str(folder)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
