"""Write phantom radiographs as DICOM with the tags a real DX/CR modality writes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_BASE_DATE = dt.date(2024, 1, 1)


def write_radiograph(
    path: Path,
    stored: np.ndarray,
    *,
    patient_id: str,
    uid_seed: str,
    modality: str,
    photometric: str,
    bits_stored: int,
    pixel_spacing_mm: float,
    laterality: str,  # "L", "R" or "B"
    day: int = 0,
    header: dict[str, object] | None = None,
) -> None:
    """Write ``stored`` (uint16, values within ``bits_stored``) as a single-frame radiograph; ``header``: more
    attributes, or other values (version 2: accession number, time, age, sex, burned-in annotation)."""
    sop_class = DX_FOR_PRESENTATION if modality == "DX" else CR_IMAGE
    ds = _new_dataset(path, sop_class, ExplicitVRLittleEndian, uid_seed, "SVDH_PHANTOM_1")
    date = _study_date(day)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[uid_seed, "frame"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "svdh phantom generator"
    ds.ManufacturerModelName = "svdh-train phantom"
    ds.SoftwareVersions = "1"
    ds.Modality = modality
    ds.ConversionType = "SYN"
    ds.BodyPartExamined = "HAND"
    ds.ViewPosition = "PA"
    ds.ImageLaterality = laterality
    ds.Laterality = laterality if laterality in ("L", "R") else ""
    ds.PatientOrientation = ["L", "H"]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    spacing = [f"{pixel_spacing_mm:.4f}", f"{pixel_spacing_mm:.4f}"]
    ds.ImagerPixelSpacing = spacing
    ds.PixelSpacing = spacing
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    maxval = (1 << bits_stored) - 1
    ds.WindowCenter = maxval / 2
    ds.WindowWidth = maxval + 1
    ds.VOILUTFunction = "LINEAR"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
    ds.KVP = 50
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    for keyword, value in (header or {}).items():
        setattr(ds, keyword, value)
    _save(ds, path)


def write_scanned_film(
    path: Path,
    jpeg: bytes,
    shape: tuple[int, int],
    *,
    patient_id: str,
    uid_seed: str,
    laterality: str,
    day: int,
    header: dict[str, object],
) -> None:
    """A film digitised on a scanner: an 8-bit JPEG in a Secondary Capture (modality RG, conversion type DF),
    with no pixel spacing (a scanner knows none of the patient's): what sites import from old films."""
    ds = _new_dataset(path, SECONDARY_CAPTURE, JPEGBaseline8Bit, uid_seed, "SVDH_PHANTOM_2")
    date = _study_date(day)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.PatientName, ds.PatientID = f"PHANTOM^{patient_id}", patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""
    ds.Manufacturer, ds.SoftwareVersions = "svdh phantom generator", "2"
    ds.Modality, ds.ConversionType, ds.BodyPartExamined = "RG", "DF", "HAND"
    ds.ImageLaterality, ds.Laterality = laterality, laterality if laterality in ("L", "R") else ""
    ds.PatientOrientation = ["L", "H"]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    _save(ds, path)


def _new_dataset(path: Path, sop_class: str, syntax: str, uid_seed: str, implementation: str) -> FileDataset:
    """A dataset with its file meta and SOP identity (UIDs derived from ``uid_seed``: reproducible)."""
    sop_instance = generate_uid(entropy_srcs=[uid_seed, "instance"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["svdh phantom generator"])
    meta.ImplementationVersionName = implementation
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    return ds


def _study_date(day: int) -> str:
    return (_BASE_DATE + dt.timedelta(days=day % 700)).strftime("%Y%m%d")


def _save(ds: FileDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ds.save_as(partial, enforce_file_format=True)
    partial.replace(path)
