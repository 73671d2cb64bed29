"""Triton model repository: the config parses with Triton's own protobuf definition and fits the graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from conftest import run_cli
from svdh_runtime.bundle import default_bundle_path, sha256_file


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_config_matches_the_graph(tmp_path: Path) -> None:
    done = run_cli(
        "svdh-export",
        "triton",
        str(default_bundle_path()),
        "--repo",
        str(tmp_path),
        "--max-batch",
        "16",
        "--instances",
        "2",
        "--kind",
        "gpu",
    )
    assert done.returncode == 0, done.stderr
    model_dir = tmp_path / "svdh"
    config = _parse(model_dir / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [1, 2, 4, 16]
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][1:] for v in [*graph.input, *graph.output]}
    assert [i.name for i in config.input] == ["image"] and list(config.input[0].dims) == shapes["image"]
    for output in config.output:
        expected = shapes[output.name]
        assert (list(output.reshape.shape) if output.HasField("reshape") else list(output.dims)) == expected
    assert sha256_file(model_dir / "1" / "model.onnx") == sha256_file(default_bundle_path() / "model.onnx")
    assert (model_dir / "svdh_manifest.json").is_file()


def test_existing_model_directory_is_kept_and_bad_names_refused(tmp_path: Path) -> None:
    (tmp_path / "svdh").mkdir()
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path))
    assert done.returncode == 3 and "already exists" in done.stderr
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path), "--name", "a b/c")
    assert done.returncode == 3 and "may only hold" in done.stderr


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_instance_kind_is_written(tmp_path: Path, kind: str) -> None:
    from svdh_exporter.triton import TritonOptions, write_triton_repository

    model_dir = write_triton_repository(default_bundle_path(), tmp_path, TritonOptions(name="m", kind=kind))
    assert model_dir.name == "m"
    assert (
        model_config_pb2.ModelInstanceGroup.Kind.Name(_parse(model_dir / "config.pbtxt").instance_group[0].kind)
        == f"KIND_{kind.upper()}"
    )
