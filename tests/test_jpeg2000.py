"""JPEG 2000 DICOM far larger than the model canvas is decoded at a reduced resolution level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from conftest import run_cli
from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.jpeg2000 import reduction_level
from svdh_runtime.preprocess import prepare_loaded
from svdh_runtime.scoring import Scorer


def large_jpeg2000(source: Path, target: Path, width: int = 2500) -> Path:
    """``source`` resampled to ``width`` columns (a detector of finer pitch), stored as JPEG 2000 lossless."""
    ds = pydicom.dcmread(source)
    stored = ds.pixel_array.astype(np.float32)
    height = int(round(width * stored.shape[0] / stored.shape[1]))
    big = np.asarray(Image.fromarray(stored, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    big = np.clip(np.round(big), 0, 2 ** int(ds.BitsStored) - 1).astype(np.uint16)
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    ds.compress(JPEG2000Lossless)
    ds.save_as(target, enforce_file_format=True)
    return target


def test_reduction_level_keeps_three_times_the_canvas() -> None:
    assert reduction_level(2000, 2500, (320, 384)) == 1
    assert reduction_level(4000, 5000, (320, 384)) == 2
    assert reduction_level(1000, 1250, (320, 384)) == 0
    assert reduction_level(20000, 25000, (16, 16)) == 5


@pytest.fixture(scope="module")
def large_files(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("j2k")
    sources = sorted((phantoms / "images").glob("*.dcm"))[:6]
    return [large_jpeg2000(s, folder / s.name) for s in sources]


def test_reduced_decode_scores_within_half_a_point_of_the_full_decode(large_files: list[Path]) -> None:
    bundle = load_bundle()
    backend = create_backend("onnxruntime", bundle)
    scorer = Scorer(bundle, backend)
    spec = bundle.manifest.preprocessing
    for path in large_files:
        reduced = scorer.score_file(path)
        assert reduced.status == "ok" and reduced.image.reduction == 1
        assert reduced.image.full_shape == (pydicom.dcmread(path, stop_before_pixels=True).Rows, 2500)
        full = read_image(path)  # every pixel
        assert full.reduction == 0 and full.pixels.shape == reduced.image.full_shape
        full_score = float(backend.infer(prepare_loaded(full, spec).canvas[None, None])["score"][0])
        assert abs(reduced.prediction.score_raw - full_score) <= 0.5, path.name
        assert reduced.prepared.box == prepare_loaded(full, spec).box


def test_files_the_reduced_path_cannot_take_are_decoded_in_full(large_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(large_files[0])
    ds.PixelRepresentation = 1  # signed samples: never through Pillow's reduced decoder
    ds.save_as(tmp_path / "signed.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "signed.dcm", needed=(320, 384))
    assert image.reduction == 0 and image.pixels.shape == image.full_shape


def test_the_json_says_which_resolution_level_was_decoded(large_files: list[Path]) -> None:
    done = run_cli("svdh-run", str(large_files[0]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jpeg2000_resolution_level"] == 1


def test_decoding_on_every_core_gives_the_values_of_one_core(large_files: list[Path]) -> None:
    """OpenJPEG's threads (OPJ_NUM_THREADS, set by the runtime unless the environment sets it) change the
    time, never the values."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import sys, hashlib, pydicom\nfrom svdh_runtime.jpeg2000 import decode_reduced\n"
        "v = decode_reduced(pydicom.dcmread(sys.argv[1]), 1)\nprint(hashlib.sha256(v.tobytes()).hexdigest())"
    )
    digests = []
    for threads in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "OPJ_NUM_THREADS"}
        if threads:
            env["OPJ_NUM_THREADS"] = threads
        done = subprocess.run(
            [sys.executable, "-c", code, str(large_files[0])], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.strip())
    assert digests[0] == digests[1] and len(digests[0]) == len(hashlib.sha256().hexdigest())
