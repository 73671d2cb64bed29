"""JPEG 2000 DICOM decoded at a reduced resolution level, when the model needs far fewer pixels.

A JPEG 2000 codestream holds the image at every power-of-two resolution: its
level-r low-pass band is the image at 1/2^r size, and decoding only that is
much faster (2500x2000 12-bit lossless: 0.16 s at level 1 against 0.6-0.8 s for
every pixel). Pillow's OpenJPEG decoder does it (``im.reduce = r``). Two facts
make the result match the full-resolution path: Pillow scales samples of
precision p < 16 up to 16 bits (shifted back here), and sample k of the level-r
band sits at full-resolution position 2^r * k, not at the centre of its
2^r-pixel block, which :func:`svdh_runtime.preprocess.prepare` compensates for
(``reduction``). OpenJPEG decodes code-blocks on every core
(``OPJ_NUM_THREADS``, unless the environment sets it: 2500x2000 at level 1 in
0.13 s on 2 cores against 0.23 s on one; the same values). Level 2 would be
faster still, but moved a phantom's score by 0.7 points against the full
decode (the tolerance is 0.5). Anything unusual (JP2 boxes, several components, signed
samples, fragments over several items, a decoder error) falls back to the full
decode.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np

from .cores import usable_cores

log = logging.getLogger(__name__)

JPEG2000_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")  # lossless only, lossy allowed
OVERSAMPLING = 3  # the reduced image keeps at least 3x the pixels the model canvas needs, per side
MAX_LEVEL = 5


def reduction_level(rows: int, columns: int, needed: tuple[int, int]) -> int:
    """The coarsest level r whose image (rows/2^r x columns/2^r) still covers ``OVERSAMPLING`` x ``needed``."""
    level = 0
    while (
        level < MAX_LEVEL
        and rows // 2 ** (level + 1) >= OVERSAMPLING * needed[0]
        and columns // 2 ** (level + 1) >= OVERSAMPLING * needed[1]
    ):
        level += 1
    return level


def _codestream(ds: object) -> bytes | None:
    from pydicom.encaps import generate_frames

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception:
        return None
    if len(frames) != 1:
        return None
    return frames[0]


def decode_reduced(ds: object, level: int) -> np.ndarray | None:
    """Stored values at 1/2^level size (before any LUT), or None when this file needs the full decode."""
    if level < 1 or int(getattr(ds, "PixelRepresentation", 0) or 0) != 0:
        return None
    stream = _codestream(ds)
    # A raw codestream: SOC, SIZ; one component; unsigned; at most 16 bits (Ssiz = precision - 1, bit 7 = signed).
    if stream is None or len(stream) < 43 or stream[:4] != b"\xff\x4f\xff\x51":
        return None
    components, ssiz = int.from_bytes(stream[40:42], "big"), stream[42]
    precision = (ssiz & 0x7F) + 1
    if components != 1 or ssiz & 0x80 or precision > 16:
        return None
    from PIL import Jpeg2KImagePlugin  # directly: Image.open would first import every Pillow plugin (~40 ms)

    os.environ.setdefault("OPJ_NUM_THREADS", str(usable_cores()))  # read by OpenJPEG when it starts a decode

    try:
        picture = Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(stream))
        picture.reduce = level
        picture.load()
        values = np.asarray(picture)
    except Exception as exc:  # a codestream with fewer levels, or one Pillow's OpenJPEG cannot read
        log.debug("reduced JPEG 2000 decode at level %d failed (%s); decoding every pixel", level, exc)
        return None
    rows, columns = int(ds.Rows), int(ds.Columns)
    expected = (-(-rows // 2**level), -(-columns // 2**level))
    if values.shape != expected or values.dtype.kind not in "ui":
        return None
    if values.dtype.itemsize == 2 and precision < 16:
        values = values >> (16 - precision)  # Pillow fills 16 bits
    return values
