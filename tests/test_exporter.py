"""Exporter: bundle contents, refusal to overwrite, checkpoint integrity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from conftest import run_cli
from svdh_runtime.bundle import load_bundle, sha256_file


def test_bundle_has_a_checked_graph_and_a_complete_manifest(bundle: Path, trained: Path) -> None:
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["score", "severity_probs", "cam"]
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    manifest = load_bundle(bundle).manifest
    assert manifest.files["model.onnx"] == sha256_file(bundle / "model.onnx")
    assert manifest.preprocessing.height == 96 and manifest.outputs.cam_height == 3
    assert manifest.members[0].cam_layer == "backbone.layer4"
    assert manifest.metrics["validation"]["n"] == 4
    assert manifest.provenance["recipe"]["model"]["architecture"] == "resnet18"
    assert manifest.provenance["export_check"]["max_score_diff"] < 1e-3


def test_existing_bundle_is_not_overwritten(bundle: Path, trained: Path) -> None:
    before = (bundle / "manifest.json").read_bytes()
    done = run_cli("svdh-export", "onnx", str(trained), "--out", str(bundle))
    assert done.returncode == 3 and "already exists" in done.stderr
    assert (bundle / "manifest.json").read_bytes() == before


def test_altered_checkpoint_is_refused(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(trained, copy)
    spec = json.loads((copy / "checkpoint.json").read_text())
    spec["weights_sha256"] = "0" * 64
    (copy / "checkpoint.json").write_text(json.dumps(spec))
    done = run_cli("svdh-export", "onnx", str(copy), "--out", str(tmp_path / "b"))
    assert done.returncode == 3 and "checksum mismatch" in done.stderr
    assert not (tmp_path / "b").exists()


def test_usage_errors_are_one_message_not_a_traceback() -> None:
    done = run_cli("svdh-run", "x.dcm", "--backend", "nonsense")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--backend" in done.stderr
    done = run_cli("svdh-train", "fit", "no-such-recipe.toml")
    assert done.returncode == 2 and done.stderr.strip() == "svdh-train: error: no-such-recipe.toml: no such recipe file"
