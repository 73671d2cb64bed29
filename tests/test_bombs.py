"""A few kilobytes must not take a clinic box down: codestream and deflate bombs, refused under a memory cap.

Each bomb is made here: a real small codestream (JPEG baseline, JPEG-LS, JPEG 2000) whose own frame header
is then patched to declare 60000x60000 pixels inside a DICOM whose header says 2000x2000, and a deflated
DICOM whose dataset inflates to 400 MiB. The reader runs in a subprocess capped by ``resource.setrlimit``
(address space), beside a good radiograph that must still be read.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

from conftest import run_cli
from svdh_runtime.codestreams import CodestreamError, declared_size

CAP_BYTES = 1536 << 20  # address space of the reading process (the libraries alone take a few hundred MB)
BIG = 60000


def _small_radiograph(phantoms: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(sorted((phantoms / "images").glob("*.dcm"))[0])
    pixels = ds.pixel_array[:64, :64]
    ds.PixelData, ds.Rows, ds.Columns = pixels.tobytes(), 64, 64
    return ds


def _patch_jpeg_sof(stream: bytes, marker: bytes, rows: int, columns: int) -> bytes:
    at = stream.index(marker)
    return stream[: at + 5] + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + stream[at + 9 :]


def _patch_siz(stream: bytes, rows: int, columns: int) -> bytes:
    at = stream.index(b"\xff\x4f\xff\x51") + 8  # Xsiz, Ysiz after SOC, SIZ, Lsiz, Rsiz
    return stream[:at] + columns.to_bytes(4, "big") + rows.to_bytes(4, "big") + stream[at + 8 :]


def _patch_siz_components(stream: bytes, components: int) -> bytes:
    at = stream.index(b"\xff\x4f\xff\x51") + 4 + 36  # Csiz after Lsiz, Rsiz and eight 4-byte sizes
    return stream[:at] + components.to_bytes(2, "big") + stream[at + 2 :]


def _encapsulated(ds: pydicom.Dataset, syntax: str, stream: bytes, path: Path) -> Path:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.Rows = ds.Columns = 2000
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def bombs(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    made = {}
    # JPEG baseline (8 bits), from Pillow, SOF0 patched
    grey = Image.fromarray(np.linspace(0, 255, 64 * 64, dtype=np.uint8).reshape(64, 64))
    buffer = io.BytesIO()
    grey.save(buffer, format="JPEG", quality=90)
    ds = _small_radiograph(phantoms)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    made["jpeg"] = _encapsulated(
        ds, JPEGBaseline8Bit, _patch_jpeg_sof(buffer.getvalue(), b"\xff\xc0", BIG, BIG), folder / "jpeg.dcm"
    )
    # JPEG-LS and JPEG 2000, from pydicom's own encoders (pyjpegls, pylibjpeg-openjpeg)
    for name, syntax, patch in (
        ("jpeg-ls", JPEGLSLossless, lambda s: _patch_jpeg_sof(s, b"\xff\xf7", BIG, BIG)),
        ("jpeg2000", JPEG2000Lossless, lambda s: _patch_siz(s, BIG, BIG)),
        # the size matches the header, but 16,384 components of 2000x2000 would be 64 G samples
        ("jpeg2000-components", JPEG2000Lossless, lambda s: _patch_siz_components(_patch_siz(s, 2000, 2000), 16384)),
    ):
        ds = _small_radiograph(phantoms)
        ds.compress(syntax)
        stream = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
        made[name] = _encapsulated(ds, syntax, patch(stream), folder / f"{name}.dcm")
    # deflated: a small header, then a private OB element of 400 MiB of zeros, deflated to well under 1 MB
    ds = _small_radiograph(phantoms)
    body = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.save_as(body, enforce_file_format=True)
    plain = body.getvalue()[
        132 + 12 + int(pydicom.dcmread(io.BytesIO(body.getvalue())).file_meta.FileMetaInformationGroupLength) :
    ]
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = 400 << 20
    deflated = squeeze.compress(b"\x09\x00\x10\x00OB\x00\x00" + size.to_bytes(4, "little"))
    zeros = bytes(1 << 20)
    deflated += b"".join(squeeze.compress(zeros) for _ in range(size >> 20))
    deflated += squeeze.compress(plain) + squeeze.flush()
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    (folder / "deflate.dcm").write_bytes(out.getvalue() + deflated)
    made["deflate"] = folder / "deflate.dcm"
    return made


_READER = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image
results = {{}}
for path in sys.argv[1:]:
    started = time.perf_counter()
    try:
        image = read_image(path)
        outcome = "read " + "x".join(map(str, image.pixels.shape))
    except InputError as exc:
        outcome = "refused: " + str(exc)
    except MemoryError:
        outcome = "MemoryError"
    results[path] = [outcome, time.perf_counter() - started]
# VmHWM: this process's own peak (ru_maxrss would include the parent's peak from before exec)
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
results["max_rss_mb"] = int(peak) / 1024
print(json.dumps(results))
"""


def test_bombs_are_refused_fast_under_a_memory_cap_and_good_files_still_read(
    bombs: dict[str, Path], phantoms: Path
) -> None:
    good = sorted((phantoms / "images").glob("*.dcm"))[1]
    paths = [str(bombs[name]) for name in ("jpeg", "jpeg-ls", "jpeg2000", "jpeg2000-components", "deflate")]
    paths.append(str(good))
    done = subprocess.run(
        [sys.executable, "-c", _READER.format(cap=CAP_BYTES), *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    for name in ("jpeg", "jpeg-ls", "jpeg2000"):
        outcome, seconds = results[str(bombs[name])]
        assert outcome.startswith("refused: ") and "declares 60000x60000 pixels but the header 2000x2000" in outcome
        assert seconds < 0.5, (name, seconds)
    outcome, seconds = results[str(bombs["jpeg2000-components"])]
    assert outcome.startswith("refused: ") and "declares 16384 component(s)" in outcome and seconds < 0.5
    outcome, seconds = results[str(bombs["deflate"])]
    assert outcome.startswith("refused: ") and "inflates beyond 192 MiB" in outcome and seconds < 1.0
    assert results[str(good)][0].startswith("read "), "the good radiograph is still read"
    assert results["max_rss_mb"] < 500


def test_a_bomb_in_a_batch_does_not_stop_the_good_files(bombs: dict[str, Path], phantoms: Path) -> None:
    good = sorted((phantoms / "images").glob("*.dcm"))[1]
    done = run_cli("svdh-run", str(bombs["jpeg"]), str(good), str(bombs["deflate"]), "--json")
    assert done.returncode == 2
    statuses = [json.loads(line)["status"] for line in done.stdout.splitlines()]
    assert statuses == ["error", "ok", "error"] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("syntax", "stream", "size"),
    [
        ("1.2.840.10008.1.2.4.50", b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08\x01\x02\x03\x04\x01\x01\x11\x00", (258, 772, 1, 8)),
        ("1.2.840.10008.1.2.4.80", b"\xff\xd8\xff\xff\xf7\x00\x0b\x10\x00\x10\x00\x20\x01\x01\x11\x00", (16, 32, 1, 16)),
        ("1.2.840.10008.1.2.4.50", b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x20\x03\x01\x11\x00", (16, 32, 3, 8)),
        ("1.2.840.10008.1.2.4.90", b"\xff\x4f\xff\x51\x00\x29\x00\x00" + (40).to_bytes(4, "big") + (30).to_bytes(4, "big")
         + bytes(8) + (40).to_bytes(4, "big") + (30).to_bytes(4, "big") + bytes(8) + b"\x00\x03\x8b\x01\x01", (30, 40, 3, 12)),
        ("1.2.840.10008.1.2.5", b"anything", None),  # RLE declares no size of its own
    ],
)  # fmt: skip
def test_declared_size_reads_frame_headers(syntax: str, stream: bytes, size: tuple[int, int] | None) -> None:
    assert declared_size(syntax, stream) == size


@settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    syntax=st.sampled_from(["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"]),
    prefix=st.sampled_from([b"\xff\xd8", b"\xff\x4f\xff\x51", b"\xff\xd8\xff\xc0", b"\xff\xd8\xff\xf7", b""]),
    body=st.binary(max_size=96),
)
def test_codestream_headers_never_crash_the_parser(syntax: str, prefix: bytes, body: bytes) -> None:
    """Fuzzed SOF/SIZ headers: a size, or a CodestreamError; never another exception, never a hang."""
    try:
        size = declared_size(syntax, prefix + body)
    except CodestreamError:
        return
    assert size is None or (len(size) == 4 and all(isinstance(v, int) and v >= 0 for v in size))


def test_a_genuine_deflated_radiograph_reads_as_the_uncompressed_one(phantoms: Path, tmp_path: Path) -> None:
    from svdh_runtime.imageio import read_image

    source = sorted((phantoms / "images").glob("*.dcm"))[2]
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert (tmp_path / "deflated.dcm").stat().st_size < source.stat().st_size
    assert np.array_equal(read_image(tmp_path / "deflated.dcm").pixels, read_image(source).pixels)
