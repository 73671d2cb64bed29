"""Defects found by attacking the runtime as a careless operator would: each with inputs made here."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from conftest import run_cli
from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image


@pytest.fixture()
def one_image(phantoms: Path, tmp_path: Path) -> Path:
    target = tmp_path / "in" / "one.dcm"
    target.parent.mkdir()
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], target)
    return target


def test_out_that_is_a_file_is_refused_before_any_work(one_image: Path, bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    done = run_cli("svdh-run", str(one_image), "--model", str(bundle), "--out", str(tmp_path / "taken"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"svdh-run: error: --out {tmp_path / 'taken'}: is a file, not a folder"


def test_out_that_cannot_be_written_is_refused_before_any_work(one_image: Path, bundle: Path) -> None:
    done = run_cli("svdh-run", str(one_image), "--model", str(bundle), "--out", "/proc/svdh-results")
    assert done.returncode == 2 and done.stdout == "" and "cannot be written to" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(
    one_image: Path, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".svdh-run.lock").open("a+") as held:  # what a running svdh-run holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = run_cli("svdh-run", str(one_image), "--model", str(bundle), "--out", str(out))
    assert done.returncode == 2 and "another svdh-run is writing there" in done.stderr
    assert not (out / "results.jsonl").exists()
    after = run_cli("svdh-run", str(one_image), "--model", str(bundle), "--out", str(out))
    assert after.returncode == 0, after.stderr


def test_the_same_file_named_twice_and_linked_is_scored_once(one_image: Path, bundle: Path, tmp_path: Path) -> None:
    os.symlink(one_image, tmp_path / "link.dcm")
    done = run_cli(
        "svdh-run", str(one_image), str(one_image), str(tmp_path / "link.dcm"), "--model", str(bundle), "--json"
    )
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    assert "2 input(s) were the same file as another" in done.stderr


def test_a_file_name_with_a_newline_keeps_each_error_on_one_line(bundle: Path, tmp_path: Path) -> None:
    strange = tmp_path / "patient\nname.txt"
    strange.write_text("not an image")
    done = run_cli("svdh-run", str(strange), "--model", str(bundle))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("svdh-run:")]
    assert len(errors) == 1 and errors[0].endswith("patient\\nname.txt: not a DICOM, PNG, JPEG, TIFF or WebP file")
    assert not any(line.startswith("name.txt") for line in done.stderr.splitlines())


def test_a_blank_image_refusal_names_the_file(bundle: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((300, 240), 128, np.uint8)).save(tmp_path / "blank.png")
    done = run_cli("svdh-run", str(tmp_path / "blank.png"), "--model", str(bundle), "--json")
    assert done.returncode == 2
    reason = json.loads(done.stdout)["reason"]
    assert reason.startswith(str(tmp_path / "blank.png")) and "no contrast" in reason


def test_palette_images_are_read_through_their_palette(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    grey = Image.fromarray(ramp)
    grey.save(tmp_path / "grey.png")
    palette = grey.convert("P")  # the same picture through a 256-grey palette, indices shuffled
    order = np.random.default_rng(0).permutation(256)
    inverse = np.argsort(order)
    shuffled = Image.fromarray(inverse[ramp].astype(np.uint8), mode="P")
    shuffled.putpalette(np.repeat(order.astype(np.uint8), 3).tolist())
    shuffled.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P" and palette.mode == "P"
    assert np.array_equal(read_image(tmp_path / "palette.png").pixels, read_image(tmp_path / "grey.png").pixels)
    colours = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8), (64, 8)), mode="P")
    colours.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0, 0, 255, 255, 255, 0, 255, 9, 9, 9, 200, 200, 200])
    colours.save(tmp_path / "colours.png")
    with pytest.raises(InputError, match="colour image"):
        read_image(tmp_path / "colours.png")


def _with_header(source: Path, target: Path, **values: str) -> Path:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in values.items():
        ds[keyword].value = value  # written as given, however invalid
    ds.save_as(target, enforce_file_format=True)
    return target


def test_invalid_header_values_never_reach_stderr_nor_stop_the_batch(
    phantoms: Path, bundle: Path, tmp_path: Path
) -> None:
    source = sorted((phantoms / "images").glob("*.dcm"))[0]
    bad_date = _with_header(source, tmp_path / "bad-date.dcm", PatientBirthDate="1945-03-17")
    bad_study = _with_header(source, tmp_path / "bad-study.dcm", StudyInstanceUID="Secretname.8472615")
    good = _with_header(source, tmp_path / "good.dcm")
    out = tmp_path / "out"
    done = run_cli("svdh-run", str(bad_date), str(bad_study), str(good), "--model", str(bundle), "--out", str(out),
                   "--dicom-results", "--json")  # fmt: skip
    records = {Path(r["source"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert [r["status"] for r in records.values()] == ["ok", "ok", "ok"], "every image is scored"
    assert "1945" not in done.stderr and "Secretname" not in done.stderr and "Traceback" not in done.stderr
    assert records["bad-date.dcm"]["dicom_results_dropped"] == ["PatientBirthDate"]
    assert pydicom.dcmread(out / "bad-date.sr.dcm").PatientBirthDate == ""
    assert records["good.dcm"]["dicom_results"] and "dicom_results_dropped" not in records["good.dcm"]
    error = records["bad-study.dcm"]["dicom_results_error"]  # results that cannot be made are said so: exit 2
    assert error == "DICOM results not made: invalid StudyInstanceUID: results could not reference this image"
    assert done.returncode == 2 and not (out / "bad-study.sr.dcm").exists()


def test_an_unreadable_sub_folder_is_an_error_for_that_folder(
    phantoms: Path, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from svdh_runtime.cli import RunOptions, _score_all
    from svdh_runtime.discovery import discover

    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], root / "one.dcm")
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[1], root / "locked" / "two.dcm")
    real = os.scandir

    def scandir(path: object = ".") -> object:  # what a folder without read permission does (tests run as root)
        if Path(path) == root / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([root])
    assert found.images == [root / "one.dcm"] and [u.path for u in found.unreadable] == [root / "locked"]
    options = RunOptions(None, True, False, "onnxruntime", 1, False)
    assert _score_all([root], bundle, options) == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["status"] for r in records] == ["error", "ok"]
    assert "folder cannot be read (Permission denied)" in records[0]["reason"]


def test_status_of_a_killed_node_is_down_at_once(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    spool = tmp_path / "spool"
    spool.mkdir()
    status = {"running": True, "heartbeat": time.time(), "pid": gone.pid, "host": socket.gethostname()}
    (spool / "status.json").write_text(json.dumps(status))
    done = run_cli("svdh-run", "status", "--spool", str(spool))
    assert done.returncode == 4 and f"its process {gone.pid} is gone" in done.stderr
    status["pid"] = os.getpid()  # alive: judged by the heartbeat
    (spool / "status.json").write_text(json.dumps(status))
    assert run_cli("svdh-run", "status", "--spool", str(spool)).returncode == 0


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("classes", "severity_probs has shape"),  # five classes in the manifest, four in the graph
        ("cam", "cam has shape"),  # a heat-map grid the graph does not have
    ],
)
def test_a_graph_that_disagrees_with_its_manifest_is_refused(
    bundle: Path, one_image: Path, tmp_path: Path, edit: str, named: str
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    outputs = manifest["outputs"]
    if edit == "classes":
        last = outputs["severity_classes"][-1]
        middle = (last["lower"] + last["upper"]) / 2
        outputs["severity_classes"][-1:] = [
            {**last, "upper": middle},
            {"name": "extreme", "lower": middle, "upper": last["upper"]},
        ]
    else:
        outputs["cam_height"], outputs["cam_width"] = outputs["cam_height"] + 1, outputs["cam_width"] + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    done = run_cli("svdh-run", str(one_image), "--model", str(copy), "--json")
    assert done.returncode == 3 and done.stdout == ""
    assert "the model does not match its manifest" in done.stderr and named in done.stderr


def test_results_are_never_read_back_as_inputs(one_image: Path, bundle: Path, tmp_path: Path) -> None:
    folder = one_image.parent
    same = run_cli("svdh-run", str(folder), "--model", str(bundle), "--out", str(folder))
    assert same.returncode == 2 and "holds the input folder" in same.stderr and same.stdout == ""
    inside = folder / "results"
    for _ in range(2):  # the second run finds its own earlier overlays beside the inputs: not read
        done = run_cli("svdh-run", str(folder), "--model", str(bundle), "--out", str(inside), "--rescore", "--json")
        assert done.returncode == 0 and len(done.stdout.splitlines()) == 1, done.stdout
    elsewhere = run_cli("svdh-run", str(folder), "--model", str(bundle), "--out", str(tmp_path / "other"), "--json")
    assert elsewhere.returncode == 0 and len(elsewhere.stdout.splitlines()) == 1
    assert f"note: {inside} is the results folder of an earlier svdh-run; not read" in elsewhere.stderr


def test_a_fifo_named_dicomdir_in_a_folder_or_named_on_the_command_line_is_refused_not_waited_on(
    one_image: Path, bundle: Path, tmp_path: Path
) -> None:
    folder = one_image.parent
    os.mkfifo(folder / "DICOMDIR")
    named = tmp_path / "pipe.dcm"
    os.mkfifo(named)
    done = run_cli("svdh-run", str(folder), str(named), "--model", str(bundle), "--json", timeout=120)
    assert done.returncode == 2, done.stderr
    records = {Path(r["source"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert records["one.dcm"]["status"] == "ok"
    for name in ("DICOMDIR", "pipe.dcm"):
        assert records[name]["status"] == "error" and records[name]["reason"].endswith("not a regular file")


def test_a_file_that_cannot_be_opened_in_a_folder_is_an_error_not_a_skip(
    one_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from svdh_runtime import discovery

    locked = one_image.parent / "IM0001"  # no extension, as many PACS exports name their files
    shutil.copy(one_image, locked)
    real_open = Path.open

    def deny(path: Path, *args: object, **kwargs: object) -> object:  # what a file without read permission does
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    found = discovery.discover([one_image.parent])
    assert locked in found.images and not found.skipped, "left to the reader, which reports it"


def test_out_inside_an_input_folder_is_said_once(one_image: Path, bundle: Path) -> None:
    inside = one_image.parent / "results"
    done = run_cli("svdh-run", str(one_image.parent), "--model", str(bundle), "--out", str(inside))
    assert done.returncode == 0
    assert f"note: --out {inside} lies inside an input folder; its files are not read as inputs" in done.stderr


def _file_size_limit(limit: int) -> None:
    """In the child: writes beyond ``limit`` bytes fail with EFBIG (as a full disk fails them), no signal."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_results_that_cannot_be_written_stop_the_run_in_one_line_and_leave_nothing_half_made(
    phantoms: Path, bundle: Path, tmp_path: Path
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for source in sorted((phantoms / "images").glob("*.dcm"))[:2]:
        shutil.copy(source, images / source.name)
    out = tmp_path / "out"
    code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.cli import main; main()"
    args = [str(images), "--model", str(bundle), "--out", str(out), "--dicom-results", "--json"]
    # the overlay (~0.1 MB) and the SR fit under 1 MB, the Secondary Capture (~2.5 MB) does not
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: _file_size_limit(1 << 20))  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"svdh-run: error: cannot write results in {out} (File too large)")
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert not list(out.glob("*.partial")) and not list(out.glob("*.sr.dcm")), "no partial file, no SR alone"
    assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text().strip()
    again = run_cli("svdh-run", *args)  # room again: the rerun scores both
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 2
    assert len(list(out.glob("*.sr.dcm"))) == 2 and len(list(out.glob("*.sc.dcm"))) == 2
