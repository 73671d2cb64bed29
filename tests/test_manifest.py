"""The manifest schema: round trip, validation, severity classes."""

from __future__ import annotations

import json

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
