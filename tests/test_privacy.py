"""Patient data never reaches logs or outputs by default, not even at debug level."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from conftest import run_cli

SECRETS = ("Doe^Jane^Secretname", "Secretname", "PID-8472615", "8472615", "19450317")


def _identified_copy(phantoms: Path, target: Path) -> Path:
    ds = pydicom.dcmread(sorted((phantoms / "images").glob("*.dcm"))[0])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = SECRETS[0], SECRETS[2], SECRETS[4]
    ds.OtherPatientIDs = "PID-8472615-B"
    ds.save_as(target, enforce_file_format=True)
    return target


def test_debug_logging_and_every_output_hold_no_patient_data(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    image = _identified_copy(phantoms, tmp_path / "patient.dcm")
    out = tmp_path / "out"
    done = run_cli("svdh-run", str(image), "--model", str(bundle), "--json", "--out", str(out), "--log-level", "debug")
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr, "debug logging is on"
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert len(written) >= 5  # overlay, JSON, results.jsonl, summary.csv, report.html
    for secret in SECRETS:
        assert secret not in done.stdout and secret not in done.stderr
        assert all(secret.encode() not in content for content in written), secret
    opted_in = run_cli("svdh-run", str(image), "--model", str(bundle), "--json", "--include-phi")
    assert json.loads(opted_in.stdout)["patient"]["PatientID"] == SECRETS[2]


def test_unknown_log_level_is_a_usage_error(phantoms: Path, bundle: Path) -> None:
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(image), "--model", str(bundle), "--log-level", "loud")
    assert done.returncode == 2 and "--log-level" in done.stderr and "Traceback" not in done.stderr
