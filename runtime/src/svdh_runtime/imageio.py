"""Readers that turn DICOM, PNG, JPEG, TIFF and WebP files into bone-bright float images.

Every failure becomes an :class:`InputError` with one readable line. No
patient data is read into :class:`ImageMeta`: the SOP Instance UID identifies
a DICOM image.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_uids import is_valid_uid
from .errors import InputError, install_hint

MAX_PIXELS = 80_000_000  # refuse larger images (decompression bombs)
MAX_SIDE = 16_384
MAX_INFLATED_BYTES = 192 << 20  # a deflated dataset may inflate to this much (80 MP x 2 bytes, and headers)
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")  # computed, digital and film-digitised radiography
CODECS_HINT = install_hint("codecs")
# Transfer syntax -> the plugin measured fastest for it here on a 2500x2000 12-bit image:
# JPEG-LS pyjpegls 93 ms vs pylibjpeg 375 ms; RLE pylibjpeg-rle 20 ms vs pydicom's own 93 ms.
_FASTEST_PLUGIN = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.5": "pylibjpeg",
}
_PILLOW_MAGIC = {  # formats read through Pillow, by their first bytes (WebP: RIFF....WEBP)
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
ACCEPTED_FORMATS = "DICOM, PNG, JPEG, TIFF or WebP"
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ""}

log = logging.getLogger(__name__)
INVALID_UID = "(invalid)"


@dataclass(frozen=True)
class ImageMeta:
    """Non-identifying facts about an input image."""

    format: str  # "dicom", "png", "jpeg", "tiff" or "webp"
    rows: int
    columns: int
    sop_instance_uid: str | None = None
    modality: str | None = None
    photometric: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    patient: dict[str, str] | None = None  # only when the caller opted in to patient data
    laterality: str | None = None  # DICOM (Image) Laterality: "L", "R" or "B" (both); None when not given


PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate")


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray  # float32, bone bright: [rows, columns] / 2**reduction
    meta: ImageMeta
    reduction: int = 0  # JPEG 2000 decoded at resolution level 1/2**reduction (see svdh_runtime.jpeg2000)

    @property
    def full_shape(self) -> tuple[int, int]:
        """(rows, columns) of the image at full resolution."""
        return (self.meta.rows, self.meta.columns)


def read_image(path: Path, include_phi: bool = False, needed: tuple[int, int] | None = None) -> LoadedImage:
    """Read any supported file, choosing the reader by content, not by name.

    Patient name, ID and birth date are read only when ``include_phi`` is set.
    ``needed`` (height, width) is the most pixels the caller will use: a JPEG 2000
    DICOM much larger than that is decoded at a reduced resolution level.
    """
    path = Path(path)
    kind = image_kind_of_header(path)
    if kind is None and path.suffix.lower() in _DICOM_SUFFIXES:
        kind = "dicom"  # DICOM without the Part 10 preamble: pydicom says whether it is one
    if kind == "dicom":
        return read_dicom(path, include_phi, needed)
    if kind is not None:
        return _read_pillow(path, kind)
    raise InputError(f"{path}: not a {ACCEPTED_FORMATS} file")


class UnreadableFileError(InputError):
    """A file that exists but cannot be opened or read (permissions, I/O error)."""


def image_kind_of_header(path: Path) -> str | None:
    """The kind of image a file's first bytes announce ("dicom", "png", "jpeg", "tiff", "webp"), else None.

    Refuses (one line) what cannot be read, and anything that is not a regular file: opening a FIFO or a
    device would wait forever."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, expected an image file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise InputError(f"{path}: file is empty")
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, kind in _PILLOW_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def read_dicom(path: Path, include_phi: bool = False, needed: tuple[int, int] | None = None) -> LoadedImage:
    """Read a single-frame greyscale radiograph: modality LUT, VOI LUT, then MONOCHROME1 inverted.

    pydicom's warnings about non-conformant files are silenced here: a file
    that can be read is read, one that cannot gives one :class:`InputError`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _read_dicom(path, include_phi, needed)
        except InputError:
            raise
        except Exception as exc:  # pydicom parses elements lazily: damage can surface on any access
            raise InputError(f"{path}: damaged DICOM file ({_one_line(exc)})") from None


def _dcmread_bounded(path: Path) -> pydicom.Dataset:  # noqa: F821
    """``pydicom.dcmread``, except that a deflated dataset is inflated in a stream and refused beyond
    :data:`MAX_INFLATED_BYTES` (pydicom would inflate all of it in one call: 1 MB can become 1 GiB)."""
    import io
    import zlib

    import pydicom
    from pydicom.filereader import read_file_meta_info
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    try:
        meta = read_file_meta_info(path)
    except Exception:
        return pydicom.dcmread(path)  # no Part 10 meta: pydicom decides, nothing to inflate
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return pydicom.dcmread(path)
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise InputError(f"{path}: deflated DICOM without a file meta group length")
    start = 132 + 12 + int(group_length)
    if _inflated_size(path, start) > MAX_INFLATED_BYTES:  # measured first, in 1 MiB steps, keeping nothing
        raise InputError(f"{path}: deflated dataset inflates beyond {MAX_INFLATED_BYTES >> 20} MiB; refused")
    with Path(path).open("rb") as handle:
        handle.seek(start)
        inflated = zlib.decompress(handle.read(), -zlib.MAX_WBITS)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the bytes below are the inflated dataset
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=False)
    buffer.write(inflated)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _inflated_size(path: Path, start: int) -> int:
    """How many bytes the raw deflate stream from ``start`` inflates to, stopping past the limit."""
    import zlib

    inflator, size = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with Path(path).open("rb") as handle:
        handle.seek(start)
        while size <= MAX_INFLATED_BYTES and (chunk := handle.read(1 << 16)):
            while chunk and size <= MAX_INFLATED_BYTES:
                size += len(inflator.decompress(chunk, 1 << 20))
                chunk = inflator.unconsumed_tail
    return size


def _shown_uid(ds: object) -> str | None:
    """The SOP Instance UID as it may be shown: None when missing, :data:`INVALID_UID` when it is not a UID."""
    uid = str(getattr(ds, "SOPInstanceUID", "") or "").strip(" \0")
    if not uid:
        return None
    return uid if is_valid_uid(uid) else INVALID_UID


def _header_int(ds: object, keyword: str, default: int) -> int:
    """An integer header value; a malformed one is an input error, not a crash."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"invalid {keyword} value {str(value)[:20]!r}") from None


def _read_dicom(path: Path, include_phi: bool, needed: tuple[int, int] | None = None) -> LoadedImage:
    from pydicom.errors import InvalidDicomError

    try:
        ds = _dcmread_bounded(path)
    except InputError:
        raise
    except InvalidDicomError:
        raise InputError(f"{path}: not a DICOM file") from None
    except Exception as exc:  # pydicom raises many kinds on damaged files
        raise InputError(f"{path}: damaged DICOM file ({_one_line(exc)})") from None
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    modality = str(ds.get("Modality", "") or "").upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise InputError(
            f"{path}: modality {modality or 'missing'} is not a radiograph ({'/'.join(RADIOGRAPH_MODALITIES)})"
        )
    try:
        samples = _header_int(ds, "SamplesPerPixel", 1)
        frames = _header_int(ds, "NumberOfFrames", 1)
        rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
        photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{path}: damaged DICOM header ({_one_line(exc)})") from None
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        shown = photometric or "unknown photometric"
        raise InputError(f"{path}: colour image ({shown}); expected a greyscale radiograph")
    if frames != 1:
        raise InputError(f"{path}: multi-frame image ({frames} frames); expected one radiograph")
    if not (0 < rows <= MAX_SIDE and 0 < columns <= MAX_SIDE) or rows * columns > MAX_PIXELS:
        raise InputError(f"{path}: image size {columns}x{rows} is outside the accepted range")
    shown_uid = _shown_uid(ds)
    log.debug(
        "%s: DICOM %s, %dx%d, %s, %s bits stored, modality %s, SOP Instance UID %s",
        path,
        getattr(ds.file_meta, "TransferSyntaxUID", None) and ds.file_meta.TransferSyntaxUID.name,
        columns,
        rows,
        photometric,
        ds.get("BitsStored", "?"),
        modality,
        shown_uid,
    )
    image, reduction = decoded_pixels(ds, path, needed)
    expected = (-(-rows // 2**reduction), -(-columns // 2**reduction))
    if image.shape != expected:
        raise InputError(f"{path}: decoded pixels have shape {image.shape}, expected {expected}")
    try:
        meta = ImageMeta(
            format="dicom",
            rows=rows,
            columns=columns,
            sop_instance_uid=shown_uid if shown_uid != INVALID_UID else None,
            modality=modality,
            photometric=photometric,
            pixel_spacing_mm=_pixel_spacing(ds),
            laterality=_laterality(ds),
            patient={k: str(ds.get(k, "") or "") for k in PHI_KEYWORDS} if include_phi else None,
        )
    except Exception as exc:
        raise InputError(f"{path}: damaged DICOM header ({_one_line(exc)})") from None
    return LoadedImage(image, meta, reduction)


def decoded_pixels(
    ds: pydicom.Dataset,  # noqa: F821
    path: Path,
    needed: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """Pixels as float32, bone bright, and their reduction level: decode (fastest installed plugin, or a
    reduced JPEG 2000 resolution level when ``needed`` is far smaller), modality LUT, VOI LUT, MONOCHROME1
    inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from .jpeg2000 import JPEG2000_SYNTAXES, decode_reduced, reduction_level

    _choose_decoder(ds, path)
    stored, reduction = None, 0
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    _check_codestream_size(ds, path, syntax)
    if needed is not None and syntax in JPEG2000_SYNTAXES:
        level = reduction_level(int(ds.Rows), int(ds.Columns), needed)
        stored = decode_reduced(ds, level) if level else None
        reduction = level if stored is not None else 0
    try:
        stored = ds.pixel_array if stored is None else stored
        image = _through_luts(stored, ds, lambda values: apply_voi_lut(apply_modality_lut(values, ds), ds))
    except Exception as exc:
        raise InputError(f"{path}: pixel data cannot be decoded ({_one_line(exc)})") from None
    image = np.asarray(image, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = np.float32(image.max()) - image
    return image, reduction


def _through_luts(stored: np.ndarray, ds: pydicom.Dataset, luts: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:  # noqa: F821
    """``luts(stored)`` (the modality and VOI LUTs, which map each stored value on its own) computed once per
    distinct value for integer pixels of up to 16 bits and looked up: the same numbers, in a fraction of the
    time of transforming every pixel (windowing a 1000x1300 image: 15 ms; the lookup: ~3 ms)."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or stored.size < 1 << 16:
        return luts(stored)
    if stored.dtype.kind == "u":  # indexed by the stored values themselves: no shifted copy of the image
        table = np.asarray(luts(np.arange(int(stored.max()) + 1, dtype=stored.dtype)), dtype=np.float32)
        return table.take(stored)
    low, high = int(stored.min()), int(stored.max())
    table = np.asarray(luts(np.arange(low, high + 1, dtype=stored.dtype)), dtype=np.float32)
    return table.take((stored.astype(np.int32) - low).astype(np.uint16))


def _check_codestream_size(ds: pydicom.Dataset, path: Path, syntax: str) -> None:  # noqa: F821
    """Refuse a compressed image whose codestream declares another size than the DICOM header (a decoder
    would allocate what the codestream says), before anything is decoded."""
    from pydicom.encaps import generate_fragments

    from .codestreams import SIZED_SYNTAXES, CodestreamError, declared_size

    if syntax not in SIZED_SYNTAXES or "PixelData" not in ds:
        return
    try:
        items = generate_fragments(ds.PixelData)
        next(items)  # the Basic Offset Table
        size = declared_size(syntax, next(items))  # the first fragment holds the frame header
    except (CodestreamError, ValueError, TypeError, StopIteration) as exc:
        raise InputError(f"{path}: compressed pixel data without a readable frame header ({_one_line(exc)})") from None
    rows, columns = int(ds.Rows), int(ds.Columns)
    if (size.rows, size.columns) != (rows, columns):
        raise InputError(
            f"{path}: the codestream declares {size.columns}x{size.rows} pixels but the header {columns}x{rows}; "
            "refused"
        )
    if size.components != 1 or not 1 <= size.bits <= 16:
        raise InputError(
            f"{path}: the codestream declares {size.components} component(s) of {size.bits} bits, "
            "expected one greyscale component of at most 16 bits; refused"
        )


def _choose_decoder(ds: pydicom.Dataset, path: Path) -> None:  # noqa: F821
    """Refuse, naming the extra to install, when no decoder is installed; prefer the fastest plugin."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        if syntax is None or not syntax.is_compressed:
            return
    except ValueError:
        raise InputError(f"{path}: {str(syntax)[:64]!r} is not a known transfer syntax") from None
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise InputError(f"{path}: transfer syntax {syntax.name} is not supported") from None
    if not decoder.is_available:
        raise InputError(f"{path}: no decoder installed for {syntax.name}; install them with: {CODECS_HINT}")
    preferred = _FASTEST_PLUGIN.get(str(syntax))
    if preferred in decoder.available_plugins:
        ds.pixel_array_options(decoding_plugin=preferred)


def _laterality(ds: object) -> str | None:
    """Image Laterality, else the series' Laterality: "L", "R" or "B"; anything else (U, empty) is None."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(getattr(ds, keyword, "") or "").strip().upper()
        if value in ("L", "R", "B"):
            return value
    return None


def _pixel_spacing(ds: object) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        try:
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


_PILLOW_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA", "P", "PA"}


def _read_pillow(path: Path, kind: str) -> LoadedImage:
    """A PNG, JPEG, TIFF or WebP file, opened only with the plugin its first bytes name."""
    import importlib

    from PIL import Image

    plugin = {"png": "PngImagePlugin", "jpeg": "JpegImagePlugin", "tiff": "TiffImagePlugin", "webp": "WebPImagePlugin"}
    try:
        importlib.import_module(f"PIL.{plugin[kind]}")  # registers just this format (Image.open would load all)
        with Image.open(path, formats=[kind.upper()]) as pil:
            if pil.width > MAX_SIDE or pil.height > MAX_SIDE or pil.width * pil.height > MAX_PIXELS:
                raise InputError(f"{path}: image size {pil.width}x{pil.height} is outside the accepted range")
            if getattr(pil, "n_frames", 1) > 1:
                raise InputError(f"{path}: {pil.n_frames} pages or frames; expected one radiograph")
            if pil.mode not in _PILLOW_MODES:
                raise InputError(f"{path}: {kind.upper()} in {pil.mode} mode; expected a greyscale radiograph")
            pil.load()
            picture = pil.convert("RGBA") if pil.mode in ("P", "PA") else pil  # palette indices are not pixels
            image = _greyscale(np.asarray(picture), path)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image dimensions are outside the accepted range") from None
    except Exception as exc:  # Pillow's decoders raise many kinds on damaged files
        raise InputError(f"{path}: damaged image file ({_one_line(exc)})") from None
    meta = ImageMeta(format=kind, rows=image.shape[0], columns=image.shape[1])
    return LoadedImage(image, meta)


def _greyscale(array: np.ndarray, path: Path) -> np.ndarray:
    """Accept greyscale, or colour whose channels are (nearly) equal as JPEG exports often are."""
    if array.ndim == 2:
        return array.astype(np.float32)
    if array.ndim == 3 and array.shape[2] in (2, 4):  # drop alpha
        array = array[..., :-1]
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0].astype(np.float32)
    if array.ndim == 3 and array.shape[2] == 3:
        rgb = array.astype(np.float32)
        spread = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())
        if spread > 0.02 * max(1.0, float(rgb.max())):
            raise InputError(f"{path}: colour image; expected a greyscale radiograph")
        return rgb.mean(axis=2)
    raise InputError(f"{path}: unsupported image layout {array.shape}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
