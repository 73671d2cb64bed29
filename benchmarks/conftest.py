"""Shared benchmark inputs: the default bundle, the shipped sample, and the backends present on this box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svdh_runtime.bundle import Bundle, load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.preprocess import prepare_loaded

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
THREADS = 2  # the clinic box and CI have two cores; torch and ONNX Runtime get the same


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle()


@pytest.fixture(scope="session")
def canvas(bundle: Bundle) -> np.ndarray:
    """The sample, prepared: ``[1, 1, H, W]`` float32."""
    return prepare_loaded(read_image(SAMPLE), bundle.manifest.preprocessing).canvas[None, None]


@pytest.fixture(scope="session")
def sample_jpeg2000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample resampled to a 2500x2000 detector and stored as JPEG 2000 lossless (12-16 bit)."""
    import pydicom
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(SAMPLE)
    stored = ds.pixel_array.astype(np.float32)
    big = np.asarray(Image.fromarray(stored, mode="F").resize((2500, 2000), Image.Resampling.BILINEAR))
    ds.PixelData = np.clip(np.round(big), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16).tobytes()
    ds.Rows, ds.Columns = 2000, 2500
    ds.compress(JPEG2000Lossless)
    path = tmp_path_factory.mktemp("jpeg2000") / "sample-2500x2000-j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
