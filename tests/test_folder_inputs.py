"""A folder from a patient CD or a PACS export is a normal input: images scored, the rest skipped with reasons."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import run_cli
from svdh_runtime.discovery import classify, discover, non_image_kind

PYDICOM_CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def _non_image(reference: Dataset, sop_class: str, modality: str) -> Dataset:
    """A minimal non-image object of the reference's patient and study (what a CD carries beside images)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID"):
        setattr(ds, keyword, reference.get(keyword, "") or "1")
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = modality, generate_uid(), 90, 1
    ds.ContentDate, ds.ContentTime = "20260101", "120000"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "126000", "DCM", "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [title]
    return ds


@pytest.fixture(scope="module")
def patient_cd(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A patient-CD-like folder: a DICOMDIR listing 4 radiographs, a CT slice, an SR and an encapsulated PDF
    in PTxxx/STxxx/SExxx subfolders (file names without extensions, as on CDs); beside them AUTORUN.INF,
    README.TXT, desktop.ini, a zip, a viewer with a PNG icon and an executable; and one radiograph that the
    DICOMDIR does not list, in a folder of its own."""
    root = tmp_path_factory.mktemp("cd") / "CDROM"
    images = sorted((phantoms / "images").glob("*.dcm"))
    reference = pydicom.dcmread(images[0])
    file_set = FileSet()
    for image in images[:4]:
        file_set.add(pydicom.dcmread(image))
    report = _non_image(reference, "1.2.840.10008.5.1.4.1.1.88.33", "SR")
    report.CompletionFlag, report.VerificationFlag = "COMPLETE", "UNVERIFIED"
    file_set.add(report)
    pdf = _non_image(reference, "1.2.840.10008.5.1.4.1.1.104.1", "DOC")
    pdf.MIMETypeOfEncapsulatedDocument, pdf.DocumentTitle, pdf.BurnedInAnnotation = "application/pdf", "report", "NO"
    pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    file_set.add(pdf)
    file_set.add(pydicom.dcmread(PYDICOM_CT))
    file_set.write(root)
    (root / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\viewer.exe\n")
    (root / "README.TXT").write_text("Your images. Open the viewer to look at them.\n")
    (root / "desktop.ini").write_bytes(b"")  # Windows leaves empty ones behind
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "viewer.exe").write_bytes(b"MZ\x90\x00" + bytes(200))
    Image.fromarray(np.full((16, 16, 3), (200, 30, 30), np.uint8)).save(root / "VIEWER" / "icon.png")
    with zipfile.ZipFile(root / "images.zip", "w") as archive:
        archive.write(images[0], "IMG0001.dcm")
    unlisted = tmp_path_factory.mktemp("export") / "EXPORT"
    unlisted.mkdir()
    shutil.copy(images[4], unlisted / "IMG0005.dcm")
    return {
        "root": root,
        "unlisted": unlisted,
        "radiographs": {str(pydicom.dcmread(p).SOPInstanceUID) for p in images[:5]},
    }


def test_patient_cd_scores_every_image_and_skips_the_rest_with_reasons(patient_cd: dict, bundle: Path) -> None:
    done = run_cli("svdh-run", str(patient_cd["root"]), str(patient_cd["unlisted"]), "--model", str(bundle), "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    scored = [r for r in records if r["status"] == "ok"]
    assert {r["sop_instance_uid"] for r in scored} == patient_cd["radiographs"]
    skipped = {
        os.path.relpath(r["source"], patient_cd["root"]): r["reason"] for r in records if r["status"] == "skipped"
    }
    assert len(records) == len(scored) + len(skipped), "nothing is an error"
    by_name = {Path(name).name: reason for name, reason in skipped.items()}
    assert by_name["DICOMDIR"].startswith("DICOMDIR")
    assert "structured report: not an image" in by_name["SR000000"]
    assert "encapsulated document: not an image" in by_name["ED000000"]
    assert "modality CT: not a radiograph" in by_name["IM000000"]  # the CT slice's series folder
    assert "archive (.zip)" in by_name["images.zip"]
    for name in ("AUTORUN.INF", "README.TXT", "desktop.ini", "viewer.exe"):
        assert "not an image file" in by_name[name], name
    assert "DICOMDIR lists the images" in by_name["icon.png"]  # a viewer's icon is not a radiograph
    assert len(skipped) == 10
    assert "10 file(s) skipped" in done.stderr and "svdh-run:" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_patient_cd_run_with_out_records_and_summarises_the_skips(
    patient_cd: dict, bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli("svdh-run", str(patient_cd["root"]), "--model", str(bundle), "--out", str(out))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in records) == 4 and sum(r["status"] == "skipped" for r in records) == 10
    assert "4 of 4 images scored" in (out / "report.html").read_text()
    again = run_cli("svdh-run", str(patient_cd["root"]), "--model", str(bundle), "--out", str(out))
    assert again.returncode == 0 and "4 input(s) already scored" in again.stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 14, "one record per file, across runs"


def test_a_dicomdir_named_on_the_command_line_stands_for_its_images(patient_cd: dict, bundle: Path) -> None:
    done = run_cli("svdh-run", str(patient_cd["root"] / "DICOMDIR"), "--model", str(bundle), "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum(r["status"] == "ok" for r in records) == 4
    assert {r["status"] for r in records} == {"ok", "skipped"}


def test_a_non_image_named_on_the_command_line_is_still_an_error(patient_cd: dict, bundle: Path) -> None:
    done = run_cli("svdh-run", str(patient_cd["root"] / "README.TXT"), "--model", str(bundle), "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["status"] == "error"
    assert "not a DICOM, PNG, JPEG, TIFF or WebP file" in done.stderr


def test_a_folder_with_nothing_to_score_says_so_and_exits_2(tmp_path: Path, bundle: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    done = run_cli("svdh-run", str(tmp_path), "--model", str(bundle))
    assert done.returncode == 2
    assert "holds no images to score" in done.stderr and "1 file(s) skipped" in done.stderr


def test_a_damaged_dicomdir_falls_back_to_reading_each_file(patient_cd: dict, tmp_path: Path) -> None:
    copy = tmp_path / "cd"
    shutil.copytree(patient_cd["root"], copy)
    (copy / "DICOMDIR").write_bytes((copy / "DICOMDIR").read_bytes()[:300])
    found = discover([copy])
    assert len(found.images) == 4, "the radiographs are found by their headers"
    kinds = {s.kind for s in found.skipped}
    assert {"DICOMDIR", "structured report", "encapsulated document", "modality CT"} <= kinds


@pytest.mark.parametrize(
    ("sop_class", "modality", "kind"),
    [
        ("1.2.840.10008.1.3.10", "", "DICOMDIR"),
        ("1.2.840.10008.5.1.4.1.1.88.59", "KO", "structured report"),  # key object selection
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "presentation state"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", "encapsulated document"),
        ("1.2.840.10008.5.1.4.1.1.7", "OT", "modality OT"),  # a secondary capture
        ("1.2.840.10008.5.1.4.1.1.1", "CR", None),
        ("1.2.840.10008.5.1.4.1.1.1.1", "DX", None),
        ("1.2.840.10008.5.1.4.1.1.1.1", "", None),  # no modality: read, and refused if it must be
        ("1.2.840.10008.5.1.4.1.1.1.1.1", "DX", None),  # not mistaken for a presentation state (…1.1.11)
    ],
)
def test_non_image_kinds_by_sop_class_and_modality(sop_class: str, modality: str, kind: str | None) -> None:
    found = non_image_kind(sop_class, modality)
    assert (found[0] if found else None) == kind


def test_a_fifo_in_a_folder_is_an_error_not_a_hang(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], tmp_path / "one.dcm")
    os.mkfifo(tmp_path / "pipe.dcm")
    assert classify(tmp_path / "pipe.dcm") is None, "left to the reader, which refuses it"
    done = run_cli("svdh-run", str(tmp_path), "--model", str(bundle), "--json", timeout=120)
    assert done.returncode == 2
    statuses = {Path(r["source"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert statuses["one.dcm"]["status"] == "ok"
    assert statuses["pipe.dcm"]["status"] == "error" and "not a regular file" in statuses["pipe.dcm"]["reason"]


def _phantom_pixels(phantoms: Path) -> np.ndarray:
    ds = pydicom.dcmread(sorted((phantoms / "images").glob("*.dcm"))[0])
    pixels = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def test_tiff_and_webp_films_are_scored_like_png(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    pixels = _phantom_pixels(phantoms)
    grey8 = np.round(255 * (pixels - pixels.min()) / np.ptp(pixels)).astype(np.uint8)
    grey16 = np.round(65535 * (pixels - pixels.min()) / np.ptp(pixels)).astype(np.uint16)
    Image.fromarray(grey8).save(tmp_path / "film.png")
    Image.fromarray(grey16).save(tmp_path / "film16.tif", compression="tiff_lzw")
    Image.fromarray(grey8).save(tmp_path / "film.webp", lossless=True)
    done = run_cli("svdh-run", str(tmp_path), "--model", str(bundle), "--json")
    assert done.returncode == 0, done.stderr
    scores = {Path(r["source"]).name: r["score"] for r in map(json.loads, done.stdout.splitlines())}
    assert set(scores) == {"film.png", "film16.tif", "film.webp"}
    assert abs(scores["film.webp"] - scores["film.png"]) < 1e-3  # lossless: the same pixels
    assert abs(scores["film16.tif"] - scores["film.png"]) < 1.0  # 16 bits against 8


def test_a_multi_page_tiff_is_refused_in_one_line(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    page = Image.fromarray(np.zeros((64, 64), np.uint8))
    page.save(tmp_path / "stack.tif", save_all=True, append_images=[page])
    done = run_cli("svdh-run", str(tmp_path / "stack.tif"), "--model", str(bundle))
    assert done.returncode == 2 and "2 pages or frames" in done.stderr
