"""The image size a compressed codestream declares, read from its own header before any decoding.

A DICOM header may say 2000x2000 while the JPEG frame inside says 60000x60000;
a decoder trusts the codestream and allocates for it. Reading the frame header
first (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) lets the reader refuse such a
file before one byte is decoded, so a 4 KB file cannot take 11 GB. The
number of components and the sample precision are read too: a decoder
allocates for every component at the declared precision.
"""

from __future__ import annotations

from typing import NamedTuple

JPEG_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # baseline
    "1.2.840.10008.1.2.4.51",  # extended
    "1.2.840.10008.1.2.4.57",  # lossless
    "1.2.840.10008.1.2.4.70",  # lossless, first-order prediction
}
JPEG_LS_SYNTAXES = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
JPEG_2000_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                      "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}  # fmt: skip
SIZED_SYNTAXES = JPEG_SYNTAXES | JPEG_LS_SYNTAXES | JPEG_2000_SYNTAXES
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC); JPEG-LS uses F7 (SOF55).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
SCAN_LIMIT = 1 << 20  # the frame header lies within the first megabyte of any sane codestream


class CodestreamError(ValueError):
    """The codestream's header is missing or malformed."""


class Declared(NamedTuple):
    """What a codestream's frame header says it holds."""

    rows: int
    columns: int
    components: int
    bits: int  # sample precision of the first component


def declared_size(syntax: str, stream: bytes) -> Declared | None:
    """What the codestream declares; None for transfer syntaxes without such a header (RLE)."""
    if syntax in JPEG_SYNTAXES or syntax in JPEG_LS_SYNTAXES:
        return _jpeg_frame_size(stream)
    if syntax in JPEG_2000_SYNTAXES:
        return _jpeg2000_size(stream)
    return None


def _jpeg_frame_size(stream: bytes) -> Declared:
    """Walk the JPEG (or JPEG-LS) marker segments up to the first start-of-frame."""
    if stream[:2] != b"\xff\xd8":
        raise CodestreamError("no JPEG start-of-image marker")
    position, end = 2, min(len(stream), SCAN_LIMIT)
    while position + 4 <= end:
        if stream[position] != 0xFF:
            raise CodestreamError(f"JPEG marker expected at byte {position}")
        marker = stream[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            break
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if length < 2:
            raise CodestreamError(f"JPEG segment of length {length}")
        if marker in _SOF_MARKERS:
            if position + 10 > len(stream):
                break
            # Lf(2) P(1) Y(2) X(2) Nf(1)
            rows = int.from_bytes(stream[position + 5 : position + 7], "big")
            columns = int.from_bytes(stream[position + 7 : position + 9], "big")
            return Declared(rows, columns, stream[position + 9], stream[position + 4])
        position += 2 + length
    raise CodestreamError("no JPEG frame header")


def _jpeg2000_size(stream: bytes) -> Declared:
    """The SIZ segment of a raw codestream (or of the codestream box of a JP2 file)."""
    start = stream.find(b"\xff\x4f\xff\x51", 0, SCAN_LIMIT)
    siz = start + 4  # Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2) Ssiz(1)
    if start < 0 or len(stream) < siz + 39:
        raise CodestreamError("no JPEG 2000 SIZ segment")
    x_size, y_size, x_offset, y_offset = (
        int.from_bytes(stream[siz + 4 + 4 * i : siz + 8 + 4 * i], "big") for i in range(4)
    )
    if x_offset > x_size or y_offset > y_size:
        raise CodestreamError("JPEG 2000 image offset beyond its size")
    components = int.from_bytes(stream[siz + 36 : siz + 38], "big")
    bits = (stream[siz + 38] & 0x7F) + 1  # Ssiz: precision - 1, the top bit says signed
    return Declared(y_size - y_offset, x_size - x_offset, components, bits)
