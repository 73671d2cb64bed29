"""The bundle shipped inside svdh-runtime and the README's main command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from svdh_runtime.bundle import default_bundle_path, load_bundle

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "sample.dcm"


def test_default_bundle_verifies_and_records_its_metrics() -> None:
    bundle = load_bundle()
    metrics = bundle.manifest.metrics
    for key in ("held_out", "held_out_shifted_acquisition"):
        assert {"pcc", "rmse", "mae", "severity_accuracy", "n", "pcc_ci", "rmse_ci"} <= set(metrics[key]), key
        assert metrics[key]["failures"] == 0
        assert metrics[key]["cam_pointing_game"]["images"] > 0
    assert "phantom" in json.dumps(bundle.manifest.provenance)


def test_default_bundle_is_an_ensemble_of_two_architectures() -> None:
    bundle = load_bundle()
    architectures = {m.architecture for m in bundle.manifest.members}
    assert len(bundle.manifest.members) >= 2 and len(architectures) >= 2
    assert sum(m.weight for m in bundle.manifest.members) == pytest.approx(1.0)


def test_default_bundle_is_small() -> None:
    """Two members (ResNet-10-T and RegNetX-200MF, FP32: 30 MB), the paired graph, which carries its own
    copy of the ResNet-10-T backbone (20 MB), and the same model pre-optimised for x86-64 AVX2 CPUs (30 MB;
    ~0.06 s off every cold start there) stay within 80 MiB, under PyPI's 100 MB file limit."""
    size = sum(p.stat().st_size for p in default_bundle_path().iterdir())
    assert size <= 80 * 1024 * 1024


def test_readme_main_command_scores_the_sample(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "svdh_runtime", str(SAMPLE), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "SvdH" in done.stdout
    record = json.loads((tmp_path / "sample.json").read_text())
    assert record["status"] == "ok" and 0 <= record["score"] <= 280
    assert (tmp_path / "sample.overlay.jpg").stat().st_size > 10_000
