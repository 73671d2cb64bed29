"""Patient data outside the header: file and folder names (``--no-paths``), invalid UIDs and library warnings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from conftest import run_cli
from svdh_runtime.naming import InputNames, path_label

SECRETS = ("Smith", "Jane", "Secretname")


def _files_and_texts(folder: Path) -> list[str]:
    """Every name under ``folder`` and every file's content as text."""
    found = []
    for path in folder.rglob("*"):
        found.append(path.name)
        if path.is_file():
            found.append(path.read_bytes().decode("latin-1"))
    return found


@pytest.fixture()
def named_after_patients(phantoms: Path, tmp_path: Path) -> Path:
    """A folder named after a patient, holding a good radiograph, a broken one and a non-image, each named
    after a patient too."""
    folder = tmp_path / "Smith_John_CD"
    (folder / "Jane_Doe").mkdir(parents=True)
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], folder / "Smith_John_hands.dcm")
    (folder / "Jane_Doe" / "Jane_Doe_hands.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"broken")
    (folder / "Jane_Doe" / "Smith_notes.txt").write_text("not an image\n")
    return folder


def test_no_paths_keeps_file_and_folder_names_out_of_every_output(
    named_after_patients: Path, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    args = ("svdh-run", str(named_after_patients), "--model", str(bundle), "--out", str(out), "--json",
            "--dicom-results", "--log-level", "debug", "--no-paths")  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr  # the broken file is an error, named by its hash
    everything = [done.stdout, done.stderr, *_files_and_texts(out)]
    for secret in SECRETS:
        assert not any(secret in text for text in everything), secret
    records = [json.loads(line) for line in done.stdout.splitlines()]
    by_status = {r["status"]: r for r in records}
    assert set(by_status) == {"ok", "error", "skipped"}
    good = named_after_patients / "Smith_John_hands.dcm"
    assert by_status["ok"]["source"] == path_label(good)
    assert by_status["ok"]["sop_instance_uid"] == pydicom.dcmread(good).SOPInstanceUID
    assert by_status["error"]["reason"].startswith(path_label(named_after_patients / "Jane_Doe" / "Jane_Doe_hands.dcm"))
    assert (out / f"{path_label(good)}.overlay.jpg").is_file() and (out / f"{path_label(good)}.sr.dcm").is_file()
    again = run_cli(*args)  # the hash is stable: the rerun resumes
    assert "1 input(s) already scored" in again.stderr


def test_paths_are_shown_by_default(named_after_patients: Path, bundle: Path) -> None:
    done = run_cli("svdh-run", str(named_after_patients / "Smith_John_hands.dcm"), "--model", str(bundle), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["source"].endswith("Smith_John_hands.dcm")


def test_scrub_replaces_longer_paths_first(tmp_path: Path) -> None:
    names = InputNames(hide_paths=True)
    short, long = tmp_path / "a", tmp_path / "a" / "b.dcm"
    labels = names.source(short), names.source(long)
    assert names.scrub(f"{long}: damaged; {short}: empty") == f"{labels[1]}: damaged; {labels[0]}: empty"
    assert InputNames().scrub(f"{long}: damaged") == f"{long}: damaged"


def test_an_invalid_uid_holding_a_name_is_never_printed(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(sorted((phantoms / "images").glob("*.dcm"))[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "Secretname.8472615"
    ds.save_as(tmp_path / "bad-uid.dcm")
    done = run_cli("svdh-run", str(tmp_path / "bad-uid.dcm"), "--model", str(bundle), "--json", "--log-level", "debug")
    assert done.returncode == 0 and "SOP Instance UID (invalid)" in done.stderr
    assert "Secretname" not in done.stdout + done.stderr and "sop_instance_uid" not in json.loads(done.stdout)
