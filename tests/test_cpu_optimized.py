"""The model pre-optimised for one kind of CPU (``svdh-export ort-optimize``): used only where it fits, same
answers, checksummed; and files written atomically read as any new file does."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from svdh_runtime.backends.cpu_optimized import OPTIMIZED_FILE, PROVENANCE_KEY, cpu_signature, fits_this_cpu
from svdh_runtime.bundle import default_bundle_path, load_bundle
from svdh_runtime.manifest import MANIFEST_NAME

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the default bundle without its pre-optimised model, then given one by ``svdh-export``."""
    if cpu_signature() is None:
        pytest.skip("this machine's CPU features cannot be read")
    bundle = tmp_path_factory.mktemp("optimized") / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["files"].pop(OPTIMIZED_FILE, None)
    manifest["provenance"].pop(PROVENANCE_KEY, None)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    (bundle / OPTIMIZED_FILE).unlink(missing_ok=True)
    assert not fits_this_cpu(load_bundle(bundle))
    done = run_cli("svdh-export", "ort-optimize", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "outputs within" in done.stderr and "session start" in done.stderr
    return bundle


def _score(bundle: Path) -> tuple[dict, str]:
    done = run_cli("svdh-run", str(SAMPLE), "--model", str(bundle), "--json", "--log-level", "info")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    record.pop("timings_ms")
    return record, done.stderr


def _with_manifest_change(source: Path, target: Path, change) -> Path:  # noqa: ANN001
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    change(manifest)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def test_export_adds_a_checksummed_model_keyed_on_this_cpu(optimized: Path) -> None:
    bundle = load_bundle(optimized)
    made = bundle.manifest.provenance[PROVENANCE_KEY]
    assert made["signature"] == cpu_signature() and made["source_sha256"] == bundle.model_sha256
    assert made["max_abs_difference"] <= 1e-4
    assert OPTIMIZED_FILE in bundle.manifest.files and fits_this_cpu(bundle)
    umask = os.umask(0o022)
    os.umask(umask)
    for name in (OPTIMIZED_FILE, MANIFEST_NAME):  # atomic writes: readable as any new file, not 0600
        assert (optimized / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_used_where_it_fits_with_the_same_answers_and_model_onnx_elsewhere(optimized: Path, tmp_path: Path) -> None:
    fitted, said = _score(optimized)
    assert f"{OPTIMIZED_FILE}, pre-optimised for this CPU" in said
    elsewhere = _with_manifest_change(
        optimized,
        tmp_path / "other-cpu",
        lambda m: m["provenance"][PROVENANCE_KEY]["signature"].update(vector_extensions=["avx512f"]),
    )
    plain, said = _score(elsewhere)
    assert OPTIMIZED_FILE not in said
    assert fitted == plain


def test_not_used_once_model_onnx_changed(optimized: Path, tmp_path: Path) -> None:
    stale = _with_manifest_change(
        optimized, tmp_path / "stale", lambda m: m["provenance"][PROVENANCE_KEY].update(source_sha256="0" * 64)
    )
    assert not fits_this_cpu(load_bundle(stale))


def test_a_damaged_optimised_model_is_refused(optimized: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(optimized, damaged)
    data = bytearray((damaged / OPTIMIZED_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / OPTIMIZED_FILE).write_bytes(bytes(data))
    done = run_cli("svdh-run", str(SAMPLE), "--model", str(damaged), "--json")
    assert done.returncode != 0 and "checksum mismatch for model.ort-cpu.onnx" in done.stderr
    assert "Traceback" not in done.stderr and not done.stdout.strip()
