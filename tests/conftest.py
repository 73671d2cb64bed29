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
    module = {"svdh-run": "svdh_runtime.entry", "svdh-export": "svdh_exporter.cli", "svdh-train": "svdh_trainer.cli"}[
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
    generate(
        out, 16, 11, workers=1, realism=1
    )  # clean version-1 phantoms: quick to make, and inside the default bundle's input gate
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


GRADED_COLUMNS = range(0, 62, 2)  # the per-area bundle grades these columns 3 or more, the others about 0


def make_per_area_checkpoint(directory: Path, show: tuple[float, float]) -> Path:
    """A small untrained network with a joint head whose answers are known: every even column of
    grade_columns() graded high, every odd one near 0; hands shown with logits ``show`` (LH, RH)."""
    import torch

    from svdh_exporter.checkpoint import save_checkpoint
    from svdh_exporter.model import ModelSpec, SvdhNet
    from svdh_runtime.areas import grade_columns
    from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, Preprocessing

    torch.manual_seed(0)
    net = SvdhNet(ModelSpec("resnet10t", len(DEFAULT_SEVERITY_CLASSES), output_stride=16, joint_head=True))
    head = net.joint_head
    with torch.no_grad():
        head.grader_weight.zero_()
        head.grader_bias.copy_(
            torch.tensor([3.0 if i in GRADED_COLUMNS else -8.0 for i in range(len(grade_columns()))])
        )
        head.hands.weight.zero_()
        head.hands.bias.copy_(torch.tensor(show))
    spec = Preprocessing(height=128, width=160, mm_per_pixel=2.0)  # the 320 mm phantom field fills the width
    save_checkpoint(directory, net.eval(), name="per-area-test", version="0.0.1", preprocessing=spec,
                    severity_classes=DEFAULT_SEVERITY_CLASSES)  # fmt: skip
    return directory


@pytest.fixture(scope="session")
def per_area_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a joint head (see :func:`make_per_area_checkpoint`) that sees both hands."""
    from svdh_exporter.onnx_export import export_bundle

    work = tmp_path_factory.mktemp("per-area")
    checkpoint = make_per_area_checkpoint(work / "checkpoint", (2.0, 2.0))
    export_bundle(checkpoint, work / "bundle", log=lambda _: None)
    return work / "bundle"


@pytest.fixture(scope="session")
def right_hand_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network, but it sees the patient's right hand only."""
    from svdh_exporter.onnx_export import export_bundle

    work = tmp_path_factory.mktemp("right-hand")
    checkpoint = make_per_area_checkpoint(work / "checkpoint", (-6.0, 6.0))
    export_bundle(checkpoint, work / "bundle", log=lambda _: None)
    return work / "bundle"
