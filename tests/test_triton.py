"""Triton model repository: the config parses with Triton's own protobuf definition and fits the graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from conftest import run_cli
from svdh_runtime.bundle import default_bundle_path, load_bundle, sha256_file


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
        "--ensemble",
        "onnxruntime_onnx",
    )
    assert done.returncode == 0, done.stderr
    model_dir = tmp_path / "svdh_graph"
    config = _parse(model_dir / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [1, 2, 4, 16]
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][1:] for v in [*graph.input, *graph.output]}
    assert [i.name for i in config.input] == ["image"] and list(config.input[0].dims) == shapes["image"]
    assert {o.name for o in config.output} == {o.name for o in graph.output}, "every graph output is served"
    for output in config.output:
        expected = shapes[output.name]
        assert (list(output.reshape.shape) if output.HasField("reshape") else list(output.dims)) == expected
    assert sha256_file(model_dir / "1" / "model.onnx") == sha256_file(default_bundle_path() / "model.onnx")
    assert (model_dir / "svdh_manifest.json").is_file()


def test_python_model_carries_the_whole_bundle_verified(tmp_path: Path) -> None:
    done = run_cli(
        "svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path), "--backend", "onnxruntime"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svdh"], "no ensemble unless asked for"
    config = _parse(tmp_path / "svdh" / "config.pbtxt")
    assert config.backend == "python" and config.parameters["backend"].string_value == "onnxruntime"
    assert [(i.name, i.data_type) for i in config.input] == [("image_bytes", model_config_pb2.TYPE_STRING)]
    assert [o.name for o in config.output] == [
        "score",
        "severity_probs",
        "cam",
        "gate_distance",
        "areas",
        "result_json",
    ]
    copy = tmp_path / "svdh" / "1" / "bundle"
    bundle = load_bundle(default_bundle_path())
    assert {p.name for p in copy.iterdir()} == {*bundle.manifest.files, "manifest.json"}
    for name, digest in bundle.manifest.files.items():
        assert sha256_file(copy / name) == digest
    entry = (tmp_path / "svdh" / "1" / "model.py").read_text()
    assert "from svdh_runtime.triton_models import ScoreModel as TritonPythonModel" in entry
    compile(entry, "model.py", "exec")


def test_ensemble_steps_fit_each_other(tmp_path: Path) -> None:
    done = run_cli(
        "svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path), "--ensemble", "onnxruntime_onnx"
    )
    assert done.returncode == 0, done.stderr
    configs = {p.name: _parse(p / "config.pbtxt") for p in tmp_path.iterdir()}
    assert sorted(configs) == ["svdh", "svdh_ensemble", "svdh_finish", "svdh_graph", "svdh_prepare"]
    ensemble = configs["svdh_ensemble"]
    assert ensemble.platform == "ensemble" and (tmp_path / "svdh_ensemble" / "1").is_dir()

    def signature(config, field: str) -> dict[str, tuple[int, list[int]]]:
        return {t.name: (t.data_type, list(t.dims)) for t in getattr(config, field)}

    assert signature(ensemble, "input") == signature(configs["svdh"], "input")
    assert signature(ensemble, "output") == signature(configs["svdh"], "output")
    assert signature(configs["svdh_finish"], "output") == signature(configs["svdh"], "output")
    available = signature(ensemble, "input")
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs, outputs = signature(model, "input"), signature(model, "output")
        assert set(step.input_map) == set(inputs), f"{step.model_name}: every input is fed"
        for name, tensor in step.input_map.items():
            assert available[tensor] == inputs[name], f"{step.model_name}.{name} <- {tensor}"
        for name, tensor in step.output_map.items():
            available[tensor] = outputs[name]
        assert model.max_batch_size >= ensemble.max_batch_size
    assert {name: available[name] for name in signature(ensemble, "output")} == signature(ensemble, "output")


def test_existing_model_directory_is_kept_and_bad_names_refused(tmp_path: Path) -> None:
    (tmp_path / "svdh").mkdir()
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path))
    assert done.returncode == 3 and "already exists" in done.stderr
    done = run_cli("svdh-export", "triton", str(default_bundle_path()), "--repo", str(tmp_path), "--name", "a b/c")
    assert done.returncode == 3 and "may only hold" in done.stderr


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_instance_kind_is_written(tmp_path: Path, kind: str) -> None:
    from svdh_exporter.triton import TritonOptions, write_triton_repository

    options = TritonOptions(name="m", kind=kind, ensemble="onnxruntime_onnx")
    dirs = write_triton_repository(default_bundle_path(), tmp_path, options)
    assert [d.name for d in dirs] == ["m", "m_prepare", "m_graph", "m_finish", "m_ensemble"]
    model_dir = dirs[2]
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
    args = ("svdh-export", "triton", str(bundle_dir), "--repo", str(repo), "--ensemble", "tensorrt_plan")
    done = run_cli(*args, "--kind", "gpu")
    assert done.returncode == 0, done.stderr
    config = _parse(repo / "svdh_graph" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert (repo / "svdh_graph" / "1" / "model.plan").read_bytes() == plan
    assert (repo / "svdh_graph" / "svdh_engine.json").is_file()
    assert (repo / "svdh" / "1" / "bundle" / "engines" / "gpu.plan").read_bytes() == plan
    done = run_cli(*args, "--kind", "cpu", "--name", "other")
    assert done.returncode == 3 and "GPU instances only" in done.stderr
    done = run_cli(*args, "--kind", "gpu", "--max-batch", "16", "--name", "other")
    assert done.returncode == 3 and "batches up to 8" in done.stderr
    (bundle_dir / "engines" / "gpu.plan").write_bytes(plan[:-1] + b"!")
    done = run_cli(*args, "--kind", "gpu", "--name", "other")
    assert done.returncode == 3 and "checksum mismatch" in done.stderr
    written = ["svdh", "svdh_ensemble", "svdh_finish", "svdh_graph", "svdh_prepare"]
    assert sorted(p.name for p in repo.iterdir()) == written, "nothing half-written"


def test_the_ensembles_context_rebuilds_the_same_answer_as_direct_scoring() -> None:
    """Prepare's JSON context plus the graph's outputs give finish the record and tensors ``svdh`` gives."""
    import json

    import numpy as np

    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from svdh_runtime.report import result_record
    from svdh_runtime.scoring import Scorer, prepare_file
    from svdh_runtime.triton_models import answer_tensors, context_of, result_from_context

    bundle = load_bundle(default_bundle_path())
    backend = OnnxRuntimeBackend(bundle.model_bytes)
    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
    direct = Scorer(bundle, backend).score_file(sample)
    prepared = prepare_file(sample, bundle.manifest.preprocessing)
    rebuilt = result_from_context(json.loads(json.dumps(context_of(prepared))))
    outputs = backend.infer(prepared.prepared.canvas[None, None])
    Scorer(bundle, None).accept_outputs(outputs, [rebuilt], None)
    want, got = result_record(direct, bundle, "x"), result_record(rebuilt, bundle, "x")
    want.pop("timings_ms"), got.pop("timings_ms")
    assert got == want
    tensors = answer_tensors([rebuilt], bundle, "x")
    assert tensors["score"].shape == (1, 1) and abs(float(tensors["score"][0, 0]) - want["score"]) < 1e-3
    assert tensors["areas"].shape == (1, 62) and tensors["cam"].shape == (1, 15, 18)
    assert json.loads(tensors["result_json"][0, 0]) == {**got, "timings_ms": rebuilt.timings_ms}
    assert np.isfinite(tensors["gate_distance"]).all()
