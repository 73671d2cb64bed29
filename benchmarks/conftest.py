"""Shared benchmark inputs: the default bundle, the shipped sample, and the backends present on this box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svdh_runtime.bundle import Bundle, load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.preprocess import prepare

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
THREADS = 2  # the clinic box and CI have two cores; torch and ONNX Runtime get the same


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle()


@pytest.fixture(scope="session")
def canvas(bundle: Bundle) -> np.ndarray:
    """The sample, prepared: ``[1, 1, H, W]`` float32."""
    return prepare(read_image(SAMPLE).pixels, bundle.manifest.preprocessing).canvas[None, None]
