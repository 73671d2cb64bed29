"""DICOM results: a TID 1500 SR and a Secondary Capture overlay, in the source's study."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from conftest import run_cli


def _items(dataset: pydicom.Dataset):  # noqa: ANN202
    for item in getattr(dataset, "ContentSequence", []):
        yield item
        yield from _items(item)


def _concept(dataset: pydicom.Dataset, code_value: str) -> pydicom.Dataset:
    matches = [i for i in _items(dataset) if i.ConceptNameCodeSequence[0].CodeValue == code_value]
    assert len(matches) == 1, code_value
    return matches[0]


@pytest.fixture(scope="module")
def scored(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    source = sorted((phantoms / "images").glob("*.dcm"))[3]
    out = tmp_path_factory.mktemp("dicom-results")
    done = run_cli("svdh-run", str(source), "--out", str(out), "--dicom-results", "--json")
    assert done.returncode == 0, done.stderr
    return source, json.loads(done.stdout), out


def test_structured_report_holds_score_and_class_and_references_the_source(scored) -> None:  # noqa: ANN001
    source_path, record, out = scored
    source = pydicom.dcmread(source_path)
    sr = pydicom.dcmread(out / f"{source_path.stem}.sr.dcm")
    assert sr.SOPClassUID.name == "Comprehensive 3D SR Storage"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.PatientID == source.PatientID  # results belong to the patient inside DICOM
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    score = _concept(sr, "SVDH-HW")
    assert float(score.MeasuredValueSequence[0].NumericValue) == pytest.approx(record["score"], abs=0.01)
    severity = _concept(sr, "SVDH-SEVERITY")
    assert severity.ConceptCodeSequence[0].CodeMeaning == record["severity"]["class"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert isinstance(hd.sr.srread(out / f"{source_path.stem}.sr.dcm"), hd.sr.Comprehensive3DSR)


def test_secondary_capture_shows_the_overlay_in_a_new_series(scored) -> None:  # noqa: ANN001
    source_path, record, out = scored
    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    sc = pydicom.dcmread(out / f"{source_path.stem}.sc.dcm")
    assert sc.SOPClassUID.name == "Secondary Capture Image Storage"
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SeriesInstanceUID != source.SeriesInstanceUID
    assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.ndim == 3 and sc.BurnedInAnnotation == "YES"
    assert record["dicom_results"] == [str(out / f"{source_path.stem}.sr.dcm"), str(out / f"{source_path.stem}.sc.dcm")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed here")
def test_results_pass_dciodvfy(scored) -> None:  # noqa: ANN001
    source_path, _, out = scored
    for suffix in ("sr", "sc"):
        checked = subprocess.run(
            ["dciodvfy", str(out / f"{source_path.stem}.{suffix}.dcm")], capture_output=True, text=True
        )
        assert "Error" not in checked.stdout + checked.stderr
