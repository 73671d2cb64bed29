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


def _bundle_with_engine(tmp_path: Path, max_batch: int = 8) -> tuple[Path, bytes]:
    """A copy of the default bundle with an engine file and its sidecar (the plan's bytes are opaque here)."""
    import json
    import shutil

    from svdh_runtime.bundle import load_bundle, sha256_bytes
    from svdh_runtime.engines import BatchProfile, EngineSidecar

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle_dir)
    manifest = load_bundle(bundle_dir).manifest
    plan = b"engine bytes " * 100
    (bundle_dir / "engines").mkdir()
    (bundle_dir / "engines" / "gpu.plan").write_bytes(plan)
    spec = manifest.preprocessing
    sidecar = EngineSidecar(
        plan="gpu.plan",
        plan_sha256=sha256_bytes(plan),
        source_onnx="model.fp16.onnx",
        source_onnx_sha256="0" * 64,
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        tensorrt_version="10.13.0.35",
        precision="fp16-mixed (strongly typed)",
        version_compatible=False,
        profile=BatchProfile(1, 1, max_batch),
        input_shape=(1, spec.height, spec.width),
    )
    (bundle_dir / "engines" / "gpu.json").write_text(json.dumps(sidecar.to_dict()))
    return bundle_dir, plan


def test_tensorrt_plan_repository(tmp_path: Path) -> None:
    bundle_dir, plan = _bundle_with_engine(tmp_path, max_batch=8)
    repo = tmp_path / "repo"
    args = ("svdh-export", "triton", str(bundle_dir), "--repo", str(repo), "--platform", "tensorrt_plan")
    done = run_cli(*args, "--kind", "gpu")
    assert done.returncode == 0, done.stderr
    config = _parse(repo / "svdh" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert (repo / "svdh" / "1" / "model.plan").read_bytes() == plan
    assert (repo / "svdh" / "svdh_engine.json").is_file()
    done = run_cli(*args, "--kind", "cpu", "--name", "other")
    assert done.returncode == 3 and "GPU instances only" in done.stderr
    done = run_cli(*args, "--kind", "gpu", "--max-batch", "16", "--name", "other")
    assert done.returncode == 3 and "batches up to 8" in done.stderr
    (bundle_dir / "engines" / "gpu.plan").write_bytes(plan[:-1] + b"!")
    done = run_cli(*args, "--kind", "gpu", "--name", "other")
    assert done.returncode == 3 and "checksum mismatch" in done.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["svdh"], "nothing half-written"
