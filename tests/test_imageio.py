"""Readers: DICOM photometric handling, PNG/JPEG, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from svdh_runtime.errors import InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import Preprocessing
from svdh_runtime.preprocess import prepare
from svdh_trainer.phantom.dicom import write_radiograph


def test_non_radiograph_modality_is_refused(tmp_path: Path) -> None:
    import pydicom

    path = _dicom(tmp_path / "ct.dcm", _ramp(), "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.Modality = "CT"
    ds.save_as(path)
    with pytest.raises(InputError, match="modality CT is not a radiograph"):
        read_image(path)


def _dicom(path: Path, stored: np.ndarray, photometric: str, bits: int = 12) -> Path:
    write_radiograph(
        path,
        stored,
        patient_id="T1",
        uid_seed=str(path),
        modality="DX",
        photometric=photometric,
        bits_stored=bits,
        pixel_spacing_mm=0.2,
        laterality="B",
    )
    return path


def _ramp() -> np.ndarray:
    y, x = np.mgrid[0:120, 0:150]
    return ((x + 2 * y) * 8).astype(np.uint16)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = _ramp()
    mono2 = read_image(_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2")).pixels
    mono1 = read_image(_dicom(tmp_path / "m1.dcm", 4095 - stored, "MONOCHROME1")).pixels
    spec = Preprocessing(64, 80)
    np.testing.assert_allclose(prepare(mono1, spec).canvas, prepare(mono2, spec).canvas, atol=1e-4)


def test_dicom_meta_has_no_patient_data(tmp_path: Path) -> None:
    meta = read_image(_dicom(tmp_path / "a.dcm", _ramp(), "MONOCHROME2")).meta
    assert meta.format == "dicom" and meta.pixel_spacing_mm == (0.2, 0.2)
    assert "T1" not in repr(meta)


def test_png_and_grey_rgb_jpeg_are_read(tmp_path: Path) -> None:
    grey = (_ramp() // 16).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.png").meta.format == "png"
    jpeg = read_image(tmp_path / "a.jpg")
    assert jpeg.meta.format == "jpeg" and jpeg.pixels.shape == grey.shape


def test_colour_image_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(InputError, match="colour image"):
        read_image(tmp_path / "c.png")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.dcm", b"", "file is empty"),
        ("notes.txt", b"hello", "not a DICOM, PNG, JPEG, TIFF or WebP file"),
        ("noise.dcm", b"\0" * 128 + b"DICM" + bytes(range(256)) * 4, "DICOM"),
        ("bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged image file"),
    ],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_image(path)
    assert "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.dcm")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)


def test_truncated_dicom_at_many_offsets_never_crashes(tmp_path: Path) -> None:
    data = _dicom(tmp_path / "whole.dcm", _ramp(), "MONOCHROME2").read_bytes()
    for cut in (10, 131, 200, 400, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError):
            read_image(path)


def test_blank_image_has_no_contrast() -> None:
    with pytest.raises(InputError, match="no contrast"):
        prepare(np.full((100, 100), 7.0, np.float32), Preprocessing(64, 64))


def test_prepare_keeps_aspect_and_centres() -> None:
    prepared = prepare(np.random.default_rng(0).random((200, 100)).astype(np.float32), Preprocessing(64, 96))
    box = prepared.box
    assert (box.height, box.width) == (64, 32) and box.left == 32 and box.top == 0
    pad = (0.0 - 0.35) / 0.3
    assert np.allclose(prepared.canvas[:, :32], pad) and np.allclose(prepared.canvas[:, 64:], pad)


def test_every_file_pydicom_ships_is_read_or_refused_with_a_reason() -> None:
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) > 50
    read, refused = 0, 0
    for path in files:
        try:
            image = read_image(path)
        except InputError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            refused += 1
        else:
            assert image.pixels.ndim == 2 and image.pixels.dtype == np.float32
            assert image.meta.modality in ("CR", "DX", "RG")
            read += 1
    assert read >= 3 and refused > 100  # pydicom ships three tiny CR images; the rest are CT, MR, SR, ...


def test_cam_peak_maps_back_to_the_image() -> None:
    from svdh_runtime.preprocess import cam_peak

    spec = Preprocessing(64, 96)
    image = np.random.default_rng(0).random((300, 200)).astype(np.float32)  # tall: padded left and right
    box = prepare(image, spec).box
    cam = np.zeros((8, 12), np.float32)
    cam[6, 5] = 1.0  # canvas cell centre: x = 5.5 * 8 = 44, y = 6.5 * 8 = 52
    x, y = cam_peak(cam, spec, box, image.shape)
    assert abs(x - (44 - box.left) * 200 / box.width) < 8 and abs(y - 52 * 300 / 64) < 8


def test_cam_peak_ignores_the_letterbox_padding() -> None:
    """A CAM that is highest on the padding beside the radiograph peaks at the image's edge, inside the image."""
    from svdh_runtime.preprocess import cam_peak

    spec = Preprocessing(64, 96)
    image = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    box = prepare(image, spec).box
    assert box.left > 8  # a tall image leaves padding on the left
    cam = np.zeros((8, 12), np.float32)
    cam[3, 0] = 5.0  # on the padding
    cam[6, 8] = 1.0  # on the radiograph
    x, y = cam_peak(cam, spec, box, image.shape)
    assert 0 <= x < 200 and 0 <= y < 300


def test_cam_peak_is_refined_between_cells() -> None:
    """Two equal neighbouring cells: the peak lies on their shared border, not on either centre."""
    from svdh_runtime.preprocess import ContentBox, cam_peak

    spec = Preprocessing(64, 96)
    box = ContentBox(top=0, left=0, height=64, width=96)  # the image fills the canvas, 1 canvas px = 1 image px
    cam = np.zeros((8, 12), np.float32)
    cam[4, 5] = cam[4, 6] = 1.0  # cell centres x = 44 and 52, y = 36
    cam[3, 5] = cam[3, 6] = cam[5, 5] = cam[5, 6] = 0.5
    x, y = cam_peak(cam, spec, box, (64, 96))
    assert x == pytest.approx(48.0, abs=0.6) and y == pytest.approx(36.0, abs=0.6)


TWINS = [
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


@pytest.mark.parametrize("name", TWINS)
def test_compressed_and_big_endian_twins_decode_to_the_same_pixels(name: str) -> None:
    import pydicom

    from svdh_runtime.imageio import decoded_pixels

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    reference, _ = decoded_pixels(pydicom.dcmread(folder / "MR_small.dcm"), folder / "MR_small.dcm")
    twin, _ = decoded_pixels(pydicom.dcmread(folder / name), folder / name)
    np.testing.assert_array_equal(twin, reference)


def test_missing_codec_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom
    from pydicom.pixels.decoders.base import Decoder
    from pydicom.uid import RLELossless

    path = _dicom(tmp_path / "rle.dcm", _ramp(), "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    assert read_image(path).pixels.shape == (120, 150)
    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(
        InputError,
        match=r"no decoder installed for RLE Lossless; install them with: pip install './runtime\[codecs\]'",
    ):
        read_image(path)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("signed", [False, True])
def test_luts_by_table_give_the_numbers_of_pydicom_on_every_pixel(function: str, signed: bool) -> None:
    """Modality and VOI LUTs applied once per stored value and looked up equal pydicom applied to each pixel."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from svdh_runtime.imageio import _through_luts

    ds = pydicom.Dataset()
    ds.BitsStored, ds.BitsAllocated, ds.PixelRepresentation = 12, 16, int(signed)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.5, -100.0, "US"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 900.0, 1400.0, function
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    rng = np.random.default_rng(3)
    low, high = (-2048, 2047) if signed else (0, 4095)
    stored = rng.integers(low, high + 1, size=(300, 400)).astype(np.int16 if signed else np.uint16)
    expected = np.asarray(apply_voi_lut(apply_modality_lut(stored, ds), ds), dtype=np.float32)
    got = _through_luts(stored, ds, lambda values: apply_voi_lut(apply_modality_lut(values, ds), ds))
    assert got.dtype == np.float32 and np.array_equal(got, expected)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    values=arrays(np.float32, st.integers(1, 3000), elements=st.floats(-1e6, 1e6, width=32, allow_nan=False)),
    low=st.floats(0, 50),
    high=st.floats(50, 100),
)
def test_percentiles_are_numpys_to_the_last_bit(values: np.ndarray, low: float, high: float) -> None:
    from svdh_runtime.preprocess import percentiles

    want = np.percentile(values, [low, high])
    got = percentiles(values, (low, high))
    assert got.dtype == want.dtype and np.array_equal(got, want)
    with_nan = np.append(values, np.float32("nan"))
    assert np.isnan(percentiles(with_nan, (low, high))).all() and np.isnan(np.percentile(with_nan, [low, high])).all()
