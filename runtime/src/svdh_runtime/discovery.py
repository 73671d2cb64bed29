"""What a folder holds: the images to score, and the files skipped with the reason.

A folder from a patient CD or a PACS export holds more than radiographs: a
``DICOMDIR``, ``AUTORUN.INF``, ``README.TXT``, ``desktop.ini``, zip files,
structured reports, encapsulated PDF reports, presentation states. Those are
plainly not images, and a folder scan *skips* them (counted, with the reason)
instead of reporting them as errors:

* a ``DICOMDIR`` is read with pydicom's ``FileSet``: the SOP class and modality
  of every file it lists come from its records, without opening the file;
* other DICOM files are classified from their header (read without pixels);
* non-DICOM files are candidates only when their content or extension says
  image (PNG, JPEG, TIFF, WebP).

DICOM objects of non-image SOP classes are skipped, and so are images of a
modality that is not a radiograph (a CT series on the same CD). Everything
else is scored, and a damaged candidate is an error as it always was. A file
named explicitly is never skipped: it is scored or refused; a ``DICOMDIR``
named explicitly stands for the images it lists.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .batch import RESULTS_NAME
from .errors import InputError
from .imageio import RADIOGRAPH_MODALITIES, UnreadableFileError, image_kind_of_header

log = logging.getLogger(__name__)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
# SOP classes that hold no image to score: a UID or a UID root (covering every class under it) -> what they are.
NON_IMAGE_SOP_CLASSES = {
    DICOMDIR_SOP_CLASS: "DICOMDIR",
    "1.2.840.10008.5.1.4.1.1.88": "structured report",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state",
    "1.2.840.10008.5.1.4.1.1.9": "waveform",
    "1.2.840.10008.5.1.4.1.1.66": "raw data or registration",
    "1.2.840.10008.5.1.4.1.1.4.2": "spectroscopy",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.200": "protocol",
}
IMAGE_EXTENSIONS = {".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}
ARCHIVE_EXTENSIONS = {".zip", ".7z", ".rar", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".iso"}


@dataclass(frozen=True)
class Skipped:
    """A file found in a folder that is not an image to score."""

    path: Path
    reason: str  # one line, for the JSON record
    kind: str  # short category, for the summary line


@dataclass
class Found:
    """The inputs of one run, in order."""

    images: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    empty_folders: list[Path] = field(default_factory=list)  # named folders without one image to score
    repeats: int = 0  # inputs that were the same file as an earlier one (named twice, a link to it)
    unreadable: list[Skipped] = field(default_factory=list)  # folders that could not be listed: input errors
    results_folders: list[Path] = field(default_factory=list)  # svdh results folders met in a scan: not read
    out_inside_inputs: bool = False  # this run's --out lies in a folder it scans (its files are not read)

    def skipped_summary(self) -> str:
        """The skips by kind, most frequent first: 'not an image file 3, DICOMDIR 1, structured report 1'."""
        kinds = Counter(s.kind for s in self.skipped)
        return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def discover(inputs: Iterable[Path], exclude: Path | None = None) -> Found:
    """Files named directly (a DICOMDIR expands to the images it lists), then every non-hidden file under
    each named folder (sorted, recursive), with what is plainly not an image skipped."""
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found = Found()
    seen: set[str] = set()

    def add_image(path: Path) -> None:
        key = os.path.realpath(path)
        if key in seen:
            found.repeats += 1
            return
        seen.add(key)
        found.images.append(path)

    def add_skip(skip: Skipped) -> None:
        key = os.path.realpath(skip.path)
        if key not in seen:
            seen.add(key)
            found.skipped.append(skip)

    for item in inputs:
        item = Path(item)
        if item.is_dir():
            before, unreadable = len(found.images), len(found.unreadable)
            _scan_folder(item, excluded, add_image, add_skip, found)
            if len(found.images) == before and not any(u.path == item for u in found.unreadable[unreadable:]):
                found.empty_folders.append(item)
        elif _is_dicomdir_name(item) and item.is_file():
            before = len(found.images)
            listed = _read_dicomdir(item, add_image, add_skip)
            if listed is None or len(found.images) == before:
                found.empty_folders.append(item)
        else:
            add_image(item)  # named explicitly: scored or refused, never skipped
    return found


def _scan_folder(folder: Path, excluded: str | None, add_image, add_skip, found: Found) -> None:  # noqa: ANN001
    def cannot_list(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        reason = f"{where}: folder cannot be read ({exc.strerror or type(exc).__name__})"
        found.unreadable.append(Skipped(where, reason, "unreadable folder"))

    def is_results_folder(path: Path) -> bool:
        """This run's --out, or the results folder of another svdh-run (it holds results.jsonl)."""
        if os.path.realpath(path) == excluded:
            found.out_inside_inputs = True
            return True
        if (path / RESULTS_NAME).is_file():
            found.results_folders.append(path)
            return True
        return False

    files: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=cannot_list):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not is_results_folder(Path(root, d)))
        files += [Path(root, name) for name in sorted(names) if not name.startswith(".")]
    listed: set[str] = set()
    media_roots: list[str] = []  # folders holding a readable DICOMDIR
    for file in files:  # DICOMDIRs first: their records describe the files they list
        if _is_dicomdir_name(file) and not _is_regular(file):
            add_image(file)  # a FIFO or device by that name: the reader refuses it, nothing waits on it
        elif _is_dicomdir_name(file):
            add_skip(Skipped(file, "DICOMDIR: the media's index (the images it lists are scored)", "DICOMDIR"))
            listing = _read_dicomdir(file, add_image, add_skip)
            if listing is not None:
                listed |= listing
                media_roots.append(os.path.realpath(file.parent) + os.sep)
    for file in files:
        real = os.path.realpath(file)
        if real in listed or _is_dicomdir_name(file):
            continue
        skip = classify(file)
        if skip is None and any(real.startswith(root) for root in media_roots) and not _is_dicom(file):
            # DICOM media list every DICOM file in their DICOMDIR; what else a CD carries (its viewer's
            # icons, help pages) is not a radiograph
            skip = Skipped(file, "not a DICOM file, on media whose DICOMDIR lists the images", "not on the media index")
        if skip is None:
            add_image(file)
        else:
            add_skip(skip)


def _is_dicom(path: Path) -> bool:
    try:
        return image_kind_of_header(path) == "dicom"
    except InputError:
        return False


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _is_dicomdir_name(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def _read_dicomdir(path: Path, add_image, add_skip) -> set[str] | None:  # noqa: ANN001
    """Add every file a DICOMDIR lists (images, or skips by SOP class and modality); the real paths listed,
    or None when the DICOMDIR cannot be read (the folder is then classified file by file)."""
    import pydicom
    from pydicom.fileset import FileSet

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            file_set = FileSet(pydicom.dcmread(path))
            instances = list(file_set)
    except Exception as exc:  # a damaged DICOMDIR must not stop the scan
        log.warning("%s: DICOMDIR unreadable (%s); the folder is classified file by file", path, type(exc).__name__)
        return None
    listed: set[str] = set()
    for instance in instances:
        try:
            file = Path(instance.path)
            sop_class = str(getattr(instance, "ReferencedSOPClassUIDInFile", "") or "")
            modality = str(getattr(instance, "Modality", "") or "").upper()
        except Exception:  # a record without a usable file reference
            continue
        listed.add(os.path.realpath(file))
        kind = non_image_kind(sop_class, modality)
        if kind is not None:
            add_skip(Skipped(file, f"{kind[1]} (listed in DICOMDIR)", kind[0]))
        else:
            add_image(file)  # a missing or damaged file is reported when it is read
    return listed


def non_image_kind(sop_class: str, modality: str) -> tuple[str, str] | None:
    """(kind, reason) when a DICOM object of this SOP class and modality holds no radiograph to score."""
    for prefix, kind in NON_IMAGE_SOP_CLASSES.items():
        if sop_class == prefix or sop_class.startswith(prefix + "."):
            return kind, f"{kind}: not an image"
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return f"modality {modality}", f"modality {modality}: not a radiograph ({'/'.join(RADIOGRAPH_MODALITIES)})"
    return None


def classify(path: Path) -> Skipped | None:
    """None when a file found in a folder is an image to score; else why it is skipped.

    Anything that is not a regular file (a FIFO, a device), and a file that cannot be opened, is left to the
    reader, which refuses it: it is an error, not something to skip silently."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # the reader reports it
    if not stat.S_ISREG(info.st_mode):
        return None
    try:
        kind = image_kind_of_header(path)
    except UnreadableFileError:
        return None  # permissions: an error for this file, whatever its name
    except InputError:
        kind = None  # empty: judged by its name; an image's name leaves it to the reader
    suffix = path.suffix.lower()
    if kind == "dicom":
        return _classify_dicom(path)
    if kind is not None or suffix in IMAGE_EXTENSIONS:
        return None
    if suffix in ARCHIVE_EXTENSIONS:
        return Skipped(path, f"archive ({suffix}): unpack it to score the images it holds", "archive")
    if suffix == ".pdf":
        return Skipped(path, "PDF document: not an image", "document")
    shown = f" ({suffix})" if suffix else ""
    return Skipped(path, f"not an image file{shown}", "not an image file")


def _classify_dicom(path: Path) -> Skipped | None:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
            meta = getattr(header, "file_meta", None)
            sop_class = str(header.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
            modality = str(header.get("Modality", "") or "").upper()
    except Exception:
        return None  # damaged: the reader reports it as an error
    kind = non_image_kind(sop_class, modality)
    return None if kind is None else Skipped(path, kind[1], kind[0])
