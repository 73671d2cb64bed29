"""The batch pipeline: prepared ahead in worker processes, batched model calls, results written off the
inference path; the log stays ordered and exactly-once, also after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


@pytest.fixture()
def folder(phantoms: Path, tmp_path: Path) -> Path:
    """Fourteen phantoms and a damaged PNG among them."""
    root = tmp_path / "in"
    root.mkdir()
    for image in sorted((phantoms / "images").glob("*.dcm"))[:14]:
        shutil.copy(image, root / image.name)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"damaged")
    return root


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _scores(records: list[dict]) -> dict[str, float]:
    return {Path(r["source"]).name: r["score"] for r in records if r["status"] == "ok"}


def test_batched_run_in_worker_processes_matches_one_at_a_time(folder: Path, tmp_path: Path) -> None:
    single = run_cli("svdh-run", str(folder), "--json", "--batch-size", "1", "--workers", "1")
    batched = run_cli("svdh-run", str(folder), "--json", "--batch-size", "4", "--workers", "2", "--worker-processes")
    assert single.returncode == batched.returncode == 2, batched.stderr  # the damaged PNG
    one = [json.loads(line) for line in single.stdout.splitlines()]
    many = [json.loads(line) for line in batched.stdout.splitlines()]
    assert [r["source"] for r in one] == [r["source"] for r in many]  # input order, batch or not
    assert len(_scores(many)) == 14
    for name, score in _scores(one).items():
        assert _scores(many)[name] == pytest.approx(score, abs=1e-3)
    first = next(r for r in many if r["status"] == "ok")
    assert set(first["timings_ms"]) >= {"read", "preprocess", "inference", "total"}
    broken = next(r for r in many if r["source"].endswith("broken.png"))
    assert broken["status"] == "error" and "broken.png" in broken["reason"]


def test_overlays_are_bounded_jpeg_unless_asked_for_full_size_png(folder: Path, tmp_path: Path) -> None:
    one = sorted(folder.glob("*.dcm"))[0]
    small, full = tmp_path / "small", tmp_path / "full"
    assert run_cli("svdh-run", str(one), "--out", str(small)).returncode == 0
    assert (
        run_cli("svdh-run", str(one), "--out", str(full), "--overlay-full-size", "--overlay-format", "png").returncode
        == 0
    )
    (jpeg,) = small.glob("*.overlay.jpg")
    (png,) = full.glob("*.overlay.png")
    record = json.loads((small / f"{one.stem}.json").read_text())
    assert record["overlay"] == str(jpeg)
    with Image.open(jpeg) as picture:
        assert picture.format == "JPEG" and max(picture.size) == 1024
    import pydicom

    source = pydicom.dcmread(one, stop_before_pixels=True)
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.size == (source.Columns, source.Rows)


def test_killed_batched_run_resumes_in_order_exactly_once(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.cli import main; main()"
    arguments = [str(folder), "--out", str(out), "--batch-size", "4", "--workers", "2", "--worker-processes"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    log = out / "results.jsonl"
    while time.monotonic() < deadline and (not log.is_file() or log.read_text().count("\n") < 5):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the run, its writer thread and its worker processes
    process.wait()
    partial = log.read_text().count("\n")
    assert 5 <= partial < 15, "the run should have been killed mid-way"
    done = run_cli("svdh-run", *arguments)
    assert done.returncode == 2, done.stderr
    records = _records(out)
    assert len(records) == 15 and len({r["source_path"] for r in records}) == 15
    scored = [r["source_path"] for r in records if r["status"] == "ok"]
    assert len(scored) == 14 and scored == sorted(scored)  # in input order across the kill
    for record in records:
        if record["status"] == "ok":
            assert Path(record["overlay"]).is_file() and (out / f"{record['name']}.json").is_file()


def test_a_results_folder_that_fills_up_stops_the_run_in_one_line(folder: Path, tmp_path: Path) -> None:
    """A write failure on the writer thread reaches the main thread: one line, exit 1, no traceback, and
    the records written before stay whole."""
    out = tmp_path / "out"
    code = (
        "import sys, itertools; sys.argv[0] = 'svdh-run'\n"
        "import svdh_runtime.overlay as overlay\n"
        "calls = itertools.count()\n"
        "real = overlay.write_overlay\n"
        "def failing(picture, path):\n"
        "    if next(calls) == 5: raise OSError(28, 'No space left on device')\n"
        "    real(picture, path)\n"
        "overlay.write_overlay = failing\n"
        "from svdh_runtime.cli import main; main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder), "--out", str(out), "--batch-size", "3", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert sum(r["status"] == "ok" for r in _records(out)) == 5


def test_scorer_batches_give_the_scores_of_single_images(bundle: Path, folder: Path) -> None:
    from svdh_runtime.backends import select_backend
    from svdh_runtime.bundle import load_bundle
    from svdh_runtime.scoring import Scorer

    loaded = load_bundle(bundle)
    scorer = Scorer(loaded, select_backend("onnxruntime", loaded).backend)
    paths = sorted(folder.iterdir())
    alone = [scorer.score_file(path) for path in paths]
    together = scorer.infer_batch([scorer.prepare_file(path) for path in paths])
    assert [r.status for r in alone] == [r.status for r in together]
    for one, many in zip(alone, together):
        if one.status == "ok":
            assert many.prediction.score == pytest.approx(one.prediction.score, abs=1e-3)
            scale = max(float(np.abs(one.prediction.cam).max()), 1e-6)
            np.testing.assert_allclose(many.prediction.cam, one.prediction.cam, atol=1e-4 * scale)
