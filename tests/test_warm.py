"""``svdh-run serve-local`` and ``svdh-run --warm``: the same answers as a cold run, without the start-up;
errors stay the caller's; only this user can reach the process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from pacs_peers import wait_for

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
ENTRY = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.entry import main; main()"


class WarmProcess:
    def __init__(self, socket_path: Path, log: Path) -> None:
        self.socket_path, self.log = socket_path, log
        env = {**os.environ, "SVDH_WARM_SOCKET": str(socket_path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "serve-local"], stderr=log.open("wb"), stdout=subprocess.DEVNULL, env=env
        )
        wait_for(lambda: "ready at" in log.read_text() or self.process.poll() is not None, 120, "serve-local")
        assert self.process.poll() is None, log.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture()
def warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WarmProcess]:
    socket_path = tmp_path / "warm.sock"
    monkeypatch.setenv("SVDH_WARM_SOCKET", str(socket_path))
    process = WarmProcess(socket_path, tmp_path / "warm.log")
    yield process
    if process.process.poll() is None:
        process.stop()


def _without_timings(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for record in records:
        record.pop("timings_ms", None)
    return records


def test_warm_answers_as_a_cold_run_does(warm: WarmProcess, tmp_path: Path) -> None:
    cold = run_cli("svdh-run", str(SAMPLE), "nothing-here.dcm", "--json")
    hot = run_cli("svdh-run", "--warm", str(SAMPLE), "nothing-here.dcm", "--json")
    assert (hot.returncode, cold.returncode) == (2, 2)
    assert _without_timings(hot.stdout) == _without_timings(cold.stdout)
    assert hot.stderr.splitlines() == cold.stderr.splitlines()  # the backend line and the one-line refusal
    assert "no warm process" not in hot.stderr
    log = warm.log.read_text()
    assert "command 1: exit 2" in log and "nothing-here" not in log and "sample" not in log.split("ready at")[1]


def test_warm_runs_in_the_callers_folder_and_writes_its_results(warm: WarmProcess, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "hand.dcm").write_bytes(SAMPLE.read_bytes())
    first = run_cli("svdh-run", "--warm", "in", "--out", "results", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "results" / "hand.json").is_file() and (tmp_path / "results" / "hand.overlay.jpg").is_file()
    again = run_cli("svdh-run", "--warm", "in", "--out", "results", cwd=tmp_path)
    assert again.returncode == 0 and "already scored" in again.stderr
    usage = run_cli("svdh-run", "--warm", "--no-such-option", str(SAMPLE))
    assert usage.returncode == 2 and "No such option" in usage.stderr
    after = run_cli("svdh-run", "--warm", str(SAMPLE), "--json")
    assert after.returncode == 0 and json.loads(after.stdout)["status"] == "ok"


def test_without_a_warm_process_the_command_runs_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVDH_WARM_SOCKET", str(tmp_path / "none.sock"))
    done = run_cli("svdh-run", "--warm", str(SAMPLE), "--json")
    assert done.returncode == 0 and "no warm process answers" in done.stderr
    assert json.loads(done.stdout)["status"] == "ok"


def test_socket_is_private_a_live_one_is_kept_and_a_stale_one_replaced(warm: WarmProcess, tmp_path: Path) -> None:
    assert warm.socket_path.stat().st_mode & 0o777 == 0o600
    second = subprocess.run(
        [sys.executable, "-c", ENTRY, "serve-local"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SVDH_WARM_SOCKET": str(warm.socket_path)},
    )
    assert second.returncode == 1 and "already serves" in second.stderr and "Traceback" not in second.stderr
    assert warm.stop() == 0 and not warm.socket_path.exists()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(warm.socket_path))  # left behind by a process that ended without removing it
    stale.close()
    restarted = WarmProcess(warm.socket_path, tmp_path / "again.log")
    try:
        assert run_cli("svdh-run", "--warm", str(SAMPLE), "--json").returncode == 0
    finally:
        restarted.stop()


def test_a_caller_that_goes_away_does_not_stop_the_process(warm: WarmProcess) -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "--warm", str(SAMPLE), str(SAMPLE), "--json", "--rescore"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.05)
    caller.kill()
    caller.wait()
    garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    garbage.connect(str(warm.socket_path))
    garbage.sendall(b"not json\n")
    garbage.close()
    done = run_cli("svdh-run", "--warm", str(SAMPLE), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "ok"
    assert warm.process.poll() is None
    assert "refused" in warm.log.read_text()


def test_the_caller_loads_nothing_heavy(warm: WarmProcess) -> None:
    """The caller's side is the standard library only: numpy, onnxruntime, pydicom and typer stay unloaded."""
    probe = (
        "import sys; sys.argv = ['svdh-run', '--warm', sys.argv[1], '--json']\n"
        "from svdh_runtime import entry\n"
        "try:\n    entry.main()\nexcept SystemExit as done:\n    code = done.code\n"
        "heavy = sorted(m for m in ('numpy', 'onnxruntime', 'pydicom', 'typer', 'PIL') if m in sys.modules)\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(SAMPLE)], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] 0" in done.stderr, done.stderr
