"""Distributed training (torchrun, 2 gloo processes on the CPU) and resuming a killed fit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RECIPE, run_cli

HERE = Path(__file__).resolve().parent


def _recipe(tmp: Path, phantoms: Path, out: Path, epochs: int, threads: int = 2) -> Path:
    text = TINY_RECIPE.format(train=phantoms, out=out)
    text = text.replace("epochs = 2", f"epochs = {epochs}").replace("threads = 2", f"threads = {threads}")
    path = tmp / f"{out.name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_two_processes_train_on_different_shards_and_end_identical(phantoms: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, phantoms, tmp_path / "ddp", epochs=2, threads=1)
    report = tmp_path / "report"
    report.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "ddp_worker.py"), str(recipe), str(report)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [set(json.loads((report / f"rank{r}.json").read_text())["seen"]) for r in (0, 1)]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])  # 12 training images: 6 per rank, no overlap
    weights = [load_file(str(report / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    history = (tmp_path / "ddp" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]  # written once, by rank 0


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "weights.safetensors"))


def test_a_killed_fit_resumes_to_the_same_weights(phantoms: Path, tmp_path: Path) -> None:
    epochs = 6
    straight = _recipe(tmp_path, phantoms, tmp_path / "straight", epochs)
    done = run_cli("svdh-train", "fit", str(straight))
    assert done.returncode == 0, done.stderr[-2000:]

    recipe = _recipe(tmp_path, phantoms, tmp_path / "killed", epochs)
    code = "import sys; from svdh_trainer.cli import main; sys.argv[0] = 'svdh-train'; main()"
    process = subprocess.Popen([sys.executable, "-c", code, "fit", str(recipe)], stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "state" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not state.is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_after = json.loads(state.read_text())["epoch"]
    assert killed_after < epochs, "the fit finished before it could be killed; the test proves nothing"

    resumed = run_cli("svdh-train", "fit", str(recipe), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {killed_after} of {epochs}" in resumed.stderr
    history = [json.loads(x)["epoch"] for x in (tmp_path / "killed" / "history.jsonl").read_text().splitlines()]
    assert history == list(range(1, epochs + 1))
    want, got = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_without_a_saved_state_is_a_clear_error(phantoms: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, phantoms, tmp_path / "fresh", 1)
    done = run_cli("svdh-train", "fit", str(recipe), "--resume")
    assert done.returncode == 2
    assert "nothing to resume" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["tensors", "last"])
def test_resume_refuses_a_damaged_state(phantoms: Path, tmp_path: Path, damage: str) -> None:
    recipe = _recipe(tmp_path, phantoms, tmp_path / "run", 1)
    assert run_cli("svdh-train", "fit", str(recipe)).returncode == 0
    target = tmp_path / "run" / ("state/state.safetensors" if damage == "tensors" else "last/weights.safetensors")
    target.write_bytes(target.read_bytes()[:-8] + b"\0" * 8)
    done = run_cli("svdh-train", "fit", str(recipe), "--resume")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
