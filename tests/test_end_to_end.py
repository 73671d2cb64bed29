"""Phantoms -> svdh-train fit -> svdh-export onnx -> svdh-run, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli


def _torch_outputs(checkpoint: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    from svdh_exporter.checkpoint import load_network
    from svdh_runtime.imageio import read_image
    from svdh_runtime.preprocess import prepare_loaded

    net, info = load_network(checkpoint)
    batch = np.stack([prepare_loaded(read_image(f), info.preprocessing).canvas for f in files])[:, None]
    with torch.no_grad():
        score, logits = net(torch.from_numpy(batch))
    return score.numpy(), torch.softmax(logits, -1).numpy()


def test_runtime_reproduces_the_torch_model(phantoms: Path, trained: Path, bundle: Path, tmp_path: Path) -> None:
    files = sorted((phantoms / "images").glob("*.dcm"))[:4]
    done = run_cli("svdh-run", *map(str, files), "--model", str(bundle), "--json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["source"] for r in records] == [str(f) for f in files]
    want_score, want_probs = _torch_outputs(trained, files)
    for record, score, probs in zip(records, want_score, want_probs):
        assert record["status"] == "ok"
        assert abs(record["score_raw"] - float(score)) < 1e-3
        got = np.array(list(record["severity"]["probabilities"].values()))
        np.testing.assert_allclose(got, probs, atol=1e-4)
        assert record["backend"] == "onnxruntime-cpu"
        assert record["model"]["name"] == "tiny-test-model"
        assert 0.0 <= record["score"] <= 280.0
        overlay = Path(record["overlay"])
        assert overlay.is_file() and overlay.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
        assert (
            json.loads((tmp_path / f"{overlay.name.removesuffix('.overlay.jpg')}.json").read_text())["score"]
            == record["score"]
        )


def test_output_holds_no_patient_data(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    import shutil

    source = sorted((phantoms / "images").glob("*.dcm"))[0]
    patient_id = source.stem  # phantom files are named after their PatientID
    file = tmp_path / "image.dcm"
    shutil.copy(source, file)
    out = tmp_path / "out"
    done = run_cli("svdh-run", str(file), "--model", str(bundle), "--json", "--out", str(out))
    assert done.returncode == 0
    written = "".join(p.read_text() for p in out.glob("*.json"))
    for text in (done.stdout, done.stderr, written):
        assert patient_id not in text and "PHANTOM^" not in text
    opted_in = run_cli("svdh-run", str(file), "--model", str(bundle), "--json", "--include-phi")
    assert json.loads(opted_in.stdout)["patient"]["PatientID"] == patient_id


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is a text file, not an image\n", "not a DICOM, PNG, JPEG, TIFF or WebP file"),
        (b"", "file is empty"),
    ],
)
def test_bad_input_gives_exit_2_and_one_line(bundle: Path, tmp_path: Path, content: bytes, expected: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    done = run_cli("svdh-run", str(bad), "--model", str(bundle))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("svdh-run:")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in done.stderr


def test_truncated_dicom_gives_exit_2(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    source = sorted((phantoms / "images").glob("*.dcm"))[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source[: len(source) // 2])
    done = run_cli("svdh-run", str(cut), "--model", str(bundle))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert any("cut.dcm" in line for line in done.stderr.splitlines() if line.startswith("svdh-run:"))


def test_one_bad_file_does_not_stop_the_batch(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    good = sorted((phantoms / "images").glob("*.dcm"))[:2]
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    done = run_cli("svdh-run", str(good[0]), str(bad), str(good[1]), "--model", str(bundle), "--json")
    assert done.returncode == 2
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert "not a DICOM" in records[1]["reason"]


def test_missing_bundle_gives_exit_3(phantoms: Path, tmp_path: Path) -> None:
    file = sorted((phantoms / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(file), "--model", str(tmp_path / "nowhere"))
    assert done.returncode == 3
    assert done.stderr.strip().count("\n") == 0 and "not a bundle directory" in done.stderr


def test_altered_model_is_refused(phantoms: Path, bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "altered"
    shutil.copytree(bundle, copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    file = sorted((phantoms / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(file), "--model", str(copy))
    assert done.returncode == 3
    assert "checksum mismatch for model.onnx" in done.stderr
