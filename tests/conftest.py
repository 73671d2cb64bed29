"""Shared fixtures: small phantom datasets and a tiny trained, exported model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = """
[data]
train = "{train}"
val_fraction = 0.25
workers = 1

[model]
architecture = "resnet18"
head = "mlp"
hidden = 32

[input]
height = 96
width = 112

[train]
epochs = 2
batch_size = 8
lr = 1e-3
threads = 2

[output]
dir = "{out}"
name = "tiny-test-model"
version = "0.0.1"
"""


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one of the console scripts in a fresh interpreter (as a user would)."""
    module = {"svdh-run": "svdh_runtime.cli", "svdh-export": "svdh_exporter.cli", "svdh-train": "svdh_trainer.cli"}[
        args[0]
    ]
    code = f"import sys; sys.argv[0] = {args[0]!r}; from {module} import main; main()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixteen both-hands phantom patients (seed 11)."""
    from svdh_trainer.phantom.generate import generate

    out = tmp_path_factory.mktemp("phantoms")
    generate(out, 16, 11, workers=1, realism=1)  # the clean phantoms the shipped default bundle was trained on
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> Path:
    """A tiny model fitted for two epochs by ``svdh-train fit``; returns its checkpoint."""
    work = tmp_path_factory.mktemp("fit")
    recipe = work / "tiny.toml"
    recipe.write_text(TINY_RECIPE.format(train=phantoms, out=work / "run"), encoding="utf-8")
    done = run_cli("svdh-train", "fit", str(recipe))
    assert done.returncode == 0, done.stderr[-2000:]
    return work / "run" / "best"


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, trained: Path) -> Path:
    """The tiny model exported by ``svdh-export onnx``."""
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    done = run_cli("svdh-export", "onnx", str(trained), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out
