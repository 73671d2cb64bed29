"""The manifest schema: round trip, validation, severity classes."""

from __future__ import annotations

import json
import re

import pytest

from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import (
    DEFAULT_SEVERITY_CLASSES,
    Manifest,
    Member,
    OutputSpec,
    Preprocessing,
    SeverityClass,
    severity_index,
)


def _manifest() -> Manifest:
    return Manifest(
        name="m",
        version="1",
        created="2026-01-01T00:00:00+00:00",
        preprocessing=Preprocessing(96, 112),
        outputs=OutputSpec(cam_height=3, cam_width=4),
        members=(Member("model", "resnet18"),),
        files={"model.onnx": "ab" * 32},
        metrics={"validation": {"pcc": 0.9}},
    )


def test_round_trip_is_identity() -> None:
    manifest = _manifest()
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


def test_unknown_field_is_named() -> None:
    data = json.loads(_manifest().to_json())
    data["preprocessing"]["sharpen"] = True
    with pytest.raises(BundleError, match="unknown field.*preprocessing: sharpen"):
        Manifest.from_dict(data)


def test_other_schema_version_is_refused() -> None:
    data = json.loads(_manifest().to_json())
    data["schema_version"] = 99
    with pytest.raises(BundleError, match="schema_version is 99"):
        Manifest.from_dict(data)


def test_missing_field_is_named() -> None:
    data = json.loads(_manifest().to_json())
    del data["members"]
    with pytest.raises(BundleError, match="missing field 'members'"):
        Manifest.from_dict(data)


def test_bad_preprocessing_values_are_refused() -> None:
    with pytest.raises(BundleError, match="percentiles"):
        Preprocessing(96, 112, low_percentile=60, high_percentile=40)
    with pytest.raises(BundleError, match="std"):
        Preprocessing(96, 112, std=0)


def test_severity_classes_must_be_contiguous() -> None:
    with pytest.raises(BundleError, match="contiguous"):
        OutputSpec(severity_classes=(SeverityClass("a", 0, 10), SeverityClass("b", 20, 280)))


@pytest.mark.parametrize(
    "score, name",
    [(0, "none"), (4.99, "none"), (5, "mild"), (79.9, "moderate"), (80, "severe"), (280, "severe"), (400, "severe")],
)
def test_severity_index_uses_half_open_ranges(score: float, name: str) -> None:
    assert DEFAULT_SEVERITY_CLASSES[severity_index(score, DEFAULT_SEVERITY_CLASSES)].name == name


def _with(change: str) -> dict:
    data = json.loads(_manifest().to_json())
    target, _, rest = change.partition("=")
    keys, value = target.split("."), json.loads(rest)
    node = data
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("metrics=5", "metrics"),
        ('provenance="x"', "provenance"),
        ("outputs.severity_classes=5", "outputs.severity_classes"),
        ("preprocessing.height=320.0", "preprocessing.height must be int"),
        ("preprocessing.height=200000", "preprocessing.height/width must be in [32, 4096]"),
        ("preprocessing.mean=NaN", "preprocessing.mean must be a finite number"),
        ("preprocessing.std=Infinity", "preprocessing.std must be a finite number"),
        ("preprocessing.low_percentile=true", "preprocessing.low_percentile must be float"),
        ('outputs.ood_threshold="1.7"', "outputs.ood_threshold must be float"),
        ('files={"model.onnx": 5}', "files must map file names to sha256 strings"),
        ('name=["m"]', "'name' must be str"),
    ],
)
def test_wrongly_typed_manifest_values_are_bundle_errors(change: str, named: str) -> None:
    with pytest.raises(BundleError, match=re.escape(named)):
        Manifest.from_dict(_with(change))


def test_a_deeply_nested_manifest_is_a_bundle_error(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply|must be a JSON object"):
        Manifest.read(tmp_path / "manifest.json")


def test_bundles_that_list_a_fifo_are_refused_not_waited_on(bundle, tmp_path) -> None:  # noqa: ANN001
    import os
    import shutil

    from conftest import run_cli

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["extra.bin"] = "00" * 32
    (copy / "manifest.json").write_text(json.dumps(manifest))
    os.mkfifo(copy / "extra.bin")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    done = run_cli("svdh-run", str(image), "--model", str(copy), timeout=60)
    assert done.returncode == 3 and "extra.bin is not a regular file" in done.stderr
    (copy / "manifest.json").unlink()
    os.mkfifo(copy / "manifest.json")
    done = run_cli("svdh-run", str(image), "--model", str(copy), timeout=60)
    assert done.returncode == 3 and "not a regular file" in done.stderr
