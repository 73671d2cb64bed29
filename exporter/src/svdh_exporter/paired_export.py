"""``svdh-export add-change``: put a paired network into a bundle as its second graph, ``change.onnx``.

The bundle keeps its single-film graph; the paired graph shares its
preprocessing (refused otherwise), is checked against torch (ONNX Runtime
within 1e-3 grade points on every area's change) before anything is written,
and is listed with its sha256 in the manifest, which gains
``outputs.paired``. A paired-route calibration of an earlier paired graph is
dropped: run ``svdh-train calibrate`` on a longitudinal set again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.bundle import MODEL_FILE, load_bundle, sha256_file
from svdh_runtime.errors import BundleError
from svdh_runtime.files import atomic_write_bytes
from svdh_runtime.manifest import MANIFEST_NAME, PAIRED_FILE, PairedSpec

from .onnx_export import OPSET, ExportError
from .paired import PAIRED_INPUTS, PAIRED_OUTPUTS, PairedGraph, load_paired

CHANGE_TOLERANCE = 1e-3  # grade points
HANDS_TOLERANCE = 1e-4
MIN_CAM_CORRELATION = 0.999
CAM_METHOD = (
    "HiResCAM of the total change over the follow-up's shown hands, with respect to the follow-up's feature "
    "map (gradient x activation, site attention held fixed; ReLU)"
)


def export_paired(graph: PairedGraph, example: tuple, path: Path, log: Callable[[str], None]) -> None:
    """Write the two-input graph as ONNX with a dynamic batch axis."""
    import io

    import torch

    buffer = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=1024)
    kwargs = dict(input_names=list(PAIRED_INPUTS), output_names=list(PAIRED_OUTPUTS), opset_version=OPSET)
    try:
        torch.onnx.export(graph, example, buffer, dynamic_shapes=({0: batch}, {0: batch}), dynamo=True,
                          external_data=False, verbose=False, **kwargs)  # fmt: skip
    except Exception as exc:
        log(f"dynamo export failed ({type(exc).__name__}); retrying with the TorchScript exporter")
        buffer = io.BytesIO()
        axes = {name: {0: "batch"} for name in [*PAIRED_INPUTS, *PAIRED_OUTPUTS]}
        torch.onnx.export(graph, example, buffer, dynamic_axes=axes, dynamo=False, **kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def check_paired(graph: PairedGraph, onnx_bytes: bytes, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Run torch and ONNX Runtime on the same pairs; raise if they disagree."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = dict(zip(PAIRED_OUTPUTS, session.run(list(PAIRED_OUTPUTS), {"baseline": before, "followup": after})))
    with torch.no_grad():
        want = dict(zip(PAIRED_OUTPUTS, (t.numpy() for t in graph(torch.from_numpy(before), torch.from_numpy(after)))))
    a, b = got["change_cam"].reshape(len(before), -1), want["change_cam"].reshape(len(before), -1)
    correlations = [1.0 if np.allclose(x, y, atol=1e-6) else float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    report = {
        "max_change_areas_diff": float(np.abs(got["change_areas"] - want["change_areas"]).max()),
        "max_hands_diff": float(np.abs(got["hands"] - want["hands"]).max()),
        "min_change_cam_correlation": min(correlations),
    }
    if report["max_change_areas_diff"] > CHANGE_TOLERANCE or report["max_hands_diff"] > HANDS_TOLERANCE:
        raise ExportError(f"ONNX Runtime does not reproduce the paired network: {report}")
    if report["min_change_cam_correlation"] < MIN_CAM_CORRELATION:
        raise ExportError(f"ONNX Runtime's change CAM departs from torch's: {report}")
    return report


def add_paired_graph(checkpoint: Path, bundle_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Export the paired network of ``checkpoint`` into the bundle; returns the export check."""
    import torch

    net, spec = load_paired(checkpoint)
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    preprocessing = dataclasses.asdict(manifest.preprocessing)
    if spec["preprocessing"] != preprocessing:
        raise BundleError(f"{checkpoint}: trained on other preprocessing than the bundle's ({bundle_dir})")
    if not manifest.outputs.per_area:
        raise BundleError(f"{bundle_dir}: the paired graph needs a bundle with per-area outputs")
    graph = PairedGraph(net).eval()
    rng = np.random.default_rng(0)
    shape = (2, 1, manifest.preprocessing.height, manifest.preprocessing.width)
    example = tuple(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) for _ in range(2))
    path = Path(bundle_dir) / PAIRED_FILE
    log(f"exporting the paired network to ONNX (opset {OPSET})")
    staging = path.with_name(path.name + ".partial")
    export_paired(graph, example, staging, log)
    import onnx

    proto = onnx.load(str(staging))
    onnx.checker.check_model(proto, full_check=True)
    cam = [d.dim_value for d in proto.graph.output[2].type.tensor_type.shape.dim]
    samples = [rng.standard_normal((3, *shape[1:]), dtype=np.float32) for _ in range(2)]
    report = check_paired(graph, staging.read_bytes(), *samples)
    log(f"ONNX Runtime matches torch: {report}")
    staging.chmod((Path(bundle_dir) / MODEL_FILE).stat().st_mode & 0o777)  # shared like the bundle's model
    staging.replace(path)
    if manifest.outputs.change_for("paired") is not None:
        log("the bundle's paired-route calibration was for another paired graph: dropped; calibrate again")
    outputs = dataclasses.replace(
        manifest.outputs,
        paired=PairedSpec(cam_height=int(cam[1]), cam_width=int(cam[2]), cam_method=CAM_METHOD,
                          trained_on=str(spec.get("provenance", {}).get("targets", ""))),
        changes=tuple(c for c in manifest.outputs.changes if c.route != "paired"),
    )  # fmt: skip
    updated = dataclasses.replace(
        manifest,
        outputs=outputs,
        files={**manifest.files, PAIRED_FILE: sha256_file(path)},
        metrics={**manifest.metrics, "paired_fit": spec.get("metrics", {})},
        provenance={**manifest.provenance, "paired": {"checkpoint": spec["name"], "version": spec["version"],
                                                      "weights_sha256": spec["weights_sha256"],
                                                      "export_check": report, **spec.get("provenance", {})}},
    )  # fmt: skip
    updated.write(Path(bundle_dir) / MANIFEST_NAME)
    return report
