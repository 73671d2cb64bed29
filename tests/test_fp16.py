"""Mixed-precision ONNX: FP32 interface, checked against FP32 before it joins the bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from conftest import run_cli
from svdh_exporter import fp16
from svdh_runtime.bundle import default_bundle_path, load_bundle
from svdh_runtime.errors import BundleError


@pytest.fixture()
def bundle_copy(tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), target)
    return target


def test_fp16_model_keeps_fp32_interface_and_sensitive_ops() -> None:
    model = onnx.load(str(default_bundle_path() / "model.onnx"))
    converted = fp16.to_mixed_precision(model)
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*converted.graph.input, *converted.graph.output])
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in converted.graph.initializer)
    inferred = onnx.shape_inference.infer_shapes(converted).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    types.update({i.name: i.data_type for i in inferred.initializer})
    sensitive = [n for n in inferred.node if n.op_type in fp16.FP32_OPS]
    assert sensitive, "the graph has reductions and a softmax"
    for node in sensitive:
        assert all(types.get(name, float32) == float32 for name in node.input[:1]), node.name


def test_fp16_joins_the_bundle_within_tolerance(phantoms: Path, bundle_copy: Path) -> None:
    images = sorted((phantoms / "images").glob("*.dcm"))[:8]
    done = run_cli("svdh-export", "fp16", str(bundle_copy), *[a for f in images for a in ("-c", str(f))])
    assert done.returncode == 0, done.stderr
    bundle = load_bundle(bundle_copy)
    check = bundle.manifest.provenance["fp16_check"]
    assert check["max_score_diff"] <= 0.5 and check["max_probs_diff"] <= 0.01 and check["min_cam_correlation"] >= 0.99
    assert "model.fp16.onnx" in bundle.manifest.files
    (bundle_copy / "model.fp16.onnx").write_bytes((bundle_copy / "model.fp16.onnx").read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match="checksum mismatch for model.fp16.onnx"):
        load_bundle(bundle_copy)


def test_fp16_outside_tolerance_is_not_written(
    phantoms: Path, bundle_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fp16, "compare", lambda *a: {"max_score_diff": 3.0, "max_probs_diff": 0.0, "min_cam_correlation": 1.0}
    )
    with pytest.raises(fp16.PrecisionError, match="outside tolerance"):
        fp16.write_fp16(bundle_copy, sorted((phantoms / "images").glob("*.dcm"))[:2])
    assert not (bundle_copy / "model.fp16.onnx").exists()
    assert "model.fp16.onnx" not in load_bundle(bundle_copy).manifest.files
