"""Batch runs over folders: one result per input, resumable after a kill, summaries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli


@pytest.fixture()
def folder(phantoms: Path, tmp_path: Path) -> Path:
    """Twelve phantoms, two in a subfolder, a damaged PNG, a text file (skipped) and a hidden file (ignored)."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    images = sorted((phantoms / "images").glob("*.dcm"))[:12]
    for image in images[:10]:
        shutil.copy(image, root / image.name)
    for image in images[10:]:
        shutil.copy(image, root / "sub" / image.name)
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"damaged")
    (root / ".hidden.dcm").write_bytes(b"ignored")
    return root


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_folder_run_writes_one_record_per_input_and_summaries(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("svdh-run", str(folder), "--out", str(out))
    assert done.returncode == 2  # broken.png
    records = _records(out)
    assert len(records) == 14 and len({r["source_path"] for r in records}) == 14
    statuses = {Path(r["source"]).name: r["status"] for r in records}
    assert sum(s == "ok" for s in statuses.values()) == 12
    assert statuses["broken.png"] == "error" and statuses["notes.txt"] == "skipped"
    assert len(list(out.glob("*.overlay.jpg"))) == 12
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 15 and summary[0].startswith("source,status,score")
    report = (out / "report.html").read_text()
    assert report.count("<img ") == 12 and "12 of 13 images scored" in report and "1 file(s) skipped" in report


def test_rerun_skips_scored_inputs_and_repairs_a_torn_log(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cli("svdh-run", str(folder), "--out", str(out))
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:40])  # lost two, tore one
    lost = {json.loads(line)["source"] for line in lines[-3:]}
    refused = {json.loads(line)["source"] for line in lines if json.loads(line)["status"] != "ok"}
    done = run_cli("svdh-run", str(folder), "--out", str(out), "--json")
    rescored = {json.loads(line)["source"] for line in done.stdout.splitlines()}
    assert rescored == lost | refused  # lost or torn records, the refused broken.png tried again, notes.txt
    records = _records(out)
    assert len(records) == 14 and len({r["source_path"] for r in records}) == 14


def test_killed_run_resumes_without_loss_or_duplicates(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.cli import main; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    log = out / "results.jsonl"
    while time.monotonic() < deadline and (not log.is_file() or log.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    partial = log.read_text().count("\n")
    assert 3 <= partial < 14, "the run should have been killed mid-way"
    done = run_cli("svdh-run", str(folder), "--out", str(out))
    assert done.returncode == 2
    records = _records(out)
    assert len(records) == 14 and len({r["source_path"] for r in records}) == 14
    assert sum(r["status"] == "ok" for r in records) == 12
