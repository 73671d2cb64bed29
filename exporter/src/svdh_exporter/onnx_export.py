"""Export a checkpoint to a bundle: one ONNX graph with in-graph Grad-CAM, and its manifest.

The export is checked before the bundle is written: onnx.checker passes and
ONNX Runtime reproduces the torch outputs on sample inputs.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svdh_runtime.backends.base import GATE_OUTPUT
from svdh_runtime.bundle import MODEL_FILE, sha256_file
from svdh_runtime.errors import BundleError, SvdhError
from svdh_runtime.manifest import MANIFEST_NAME, Manifest, Member, OutputSpec, Preprocessing, SeverityClass

from . import __version__

OPSET = 18
GATE_TOLERANCE = 1e-3  # relative
TRACE_BATCH = 2  # a batch of at least 2 keeps the batch axis dynamic
SCORE_TOLERANCE = 1e-3
PROBS_TOLERANCE = 1e-4
AREAS_TOLERANCE = 1e-4  # grade points
JOINTS_TOLERANCE = 1e-2  # canvas pixels
MIN_CAM_CORRELATION = 0.9999


class ExportError(SvdhError):
    """The model could not be exported or the export does not reproduce the model."""


def export_onnx(graph: Any, example: Any, path: Path, log: Callable[[str], None] = print) -> None:
    """Write ``graph`` (a torch module) as ONNX with a dynamic batch axis."""
    import torch

    names = list(graph.output_names)
    kwargs = dict(input_names=["image"], output_names=names, opset_version=OPSET)
    try:
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
            dynamo=True,
            external_data=False,
            verbose=False,
            **kwargs,
        )
    except Exception as exc:  # fall back to the TorchScript exporter, which handles some graphs dynamo cannot
        log(f"dynamo export failed ({type(exc).__name__}); retrying with the TorchScript exporter")
        axes = {name: {0: "batch"} for name in ["image", *names]}
        torch.onnx.export(graph, (example,), str(path), dynamic_axes=axes, dynamo=False, **kwargs)


def check_against_torch(graph: Any, onnx_bytes: bytes, inputs: np.ndarray) -> dict[str, float]:
    """Run torch and ONNX Runtime on the same inputs; raise if they disagree."""
    import torch

    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_bytes)
    got = backend.infer(inputs)
    with torch.no_grad():
        want = dict(zip(graph.output_names, (t.numpy() for t in graph(torch.from_numpy(inputs)))))
    missing = sorted(set(want) - set(got))
    if missing:
        raise ExportError(f"the exported graph lacks the output(s) {', '.join(missing)}")

    def largest(name: str) -> float:
        return float(np.abs(got[name] - want[name]).max())

    a, b = got["cam"].reshape(len(inputs), -1), want["cam"].reshape(len(inputs), -1)
    correlations = [1.0 if np.allclose(x, y, atol=1e-6) else float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    report = {
        "max_score_diff": largest("score"),
        "max_probs_diff": largest("severity_probs"),
        "min_cam_correlation": min(correlations),
    }
    limits = {"max_score_diff": SCORE_TOLERANCE, "max_probs_diff": PROBS_TOLERANCE}
    if "areas" in want:
        report |= {"max_areas_diff": largest("areas"), "max_hands_diff": largest("hands")}
        report["max_joints_diff"] = largest("joints")
        limits |= {"max_areas_diff": AREAS_TOLERANCE, "max_hands_diff": PROBS_TOLERANCE}
        limits["max_joints_diff"] = JOINTS_TOLERANCE
    if GATE_OUTPUT in want:
        report["max_gate_relative_diff"] = float(
            (np.abs(got[GATE_OUTPUT] - want[GATE_OUTPUT]) / np.maximum(np.abs(want[GATE_OUTPUT]), 1e-6)).max()
        )
        limits["max_gate_relative_diff"] = GATE_TOLERANCE
    if any(report[name] > limit for name, limit in limits.items()) or min(correlations) < MIN_CAM_CORRELATION:
        raise ExportError(f"ONNX Runtime does not reproduce the torch model: {report}")
    return report


@dataclass(frozen=True)
class GateOptions:
    """Where the input gate is fitted (training radiographs) and calibrated (other radiographs)."""

    fit_folder: Path
    calibration_folder: Path | None = None  # default: a held-back fifth of the fit folder
    max_images: int = 2000


@dataclass(frozen=True)
class ExportSource:
    """What a bundle is made from: the export graph and the manifest fields it brings."""

    graph: Any  # torch module: image -> (score, severity_probs, cam)
    description: str
    name: str
    version: str
    preprocessing: Preprocessing
    severity_classes: tuple[SeverityClass, ...]
    members: tuple[Member, ...]
    metrics: Mapping[str, Any]
    provenance: Mapping[str, Any]
    cam_method: str = OutputSpec.cam_method


ENSEMBLE_CAM_METHOD = (
    "grad-cam of the combined score (per member: ReLU of the feature maps weighted by the gradient through "
    "the combiner; resampled to the finest member grid and summed; not normalised)"
)


def _layer_name(net: Any) -> str:
    from .model import cam_target_layer

    layer = cam_target_layer(net)
    return next(n for n, m in net.named_modules() if m is layer)


def checkpoint_source(checkpoint: Path) -> ExportSource:
    """One trained network."""
    from .checkpoint import load_network
    from .model import CamGraph

    net, info = load_network(Path(checkpoint))
    spec = info.preprocessing
    return ExportSource(
        graph=CamGraph(net).eval(),
        description=f"{net.spec.architecture} at {spec.height}x{spec.width}",
        name=info.name,
        version=info.version,
        preprocessing=spec,
        severity_classes=info.severity_classes,
        members=(Member(name="model", architecture=net.spec.architecture, weight=1.0, cam_layer=_layer_name(net)),),
        metrics=info.metrics,
        provenance={**info.provenance, "checkpoint_weights_sha256": info.weights_sha256},
    )


def ensemble_source(directory: Path) -> ExportSource:
    """An ensemble folder written by ``svdh-train ensemble``: members and combiner in one graph."""
    from .ensemble import canvas_of, load_ensemble

    graph, loaded, spec = load_ensemble(Path(directory))
    infos = [info for _, info in loaded]
    canvas = canvas_of(infos).preprocessing
    members = tuple(
        Member(
            name=f"{info.name}@{info.preprocessing.height}x{info.preprocessing.width}",
            architecture=net.spec.architecture,
            weight=ref.weight,
            cam_layer=f"members.{index}.{_layer_name(net)}",
        )
        for index, ((net, info), ref) in enumerate(zip(loaded, spec.members))
    )
    return ExportSource(
        graph=graph,
        description=f"{spec.combiner} ensemble of {len(members)} ({', '.join(m.name for m in members)})",
        name=spec.name,
        version=spec.version,
        preprocessing=canvas,
        severity_classes=infos[0].severity_classes,
        members=members,
        metrics=spec.metrics,
        cam_method=ENSEMBLE_CAM_METHOD,
        provenance={
            **spec.provenance,
            "ensemble": {
                "combiner": spec.combiner,
                "bias": spec.bias,
                "cam_grid": list(graph.grid),
                "members": [
                    {
                        "name": info.name,
                        "version": info.version,
                        "architecture": net.spec.architecture,
                        "input": [info.preprocessing.height, info.preprocessing.width],
                        "output_stride": net.spec.output_stride,
                        "weight": ref.weight,
                        "weights_sha256": info.weights_sha256,
                        "validation": dict(info.metrics).get("validation", {}),
                        "provenance": dict(info.provenance),
                    }
                    for (net, info), ref in zip(loaded, spec.members)
                ],
            },
        },
    )


def export_bundle(
    source: Path,
    out: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    force: bool = False,
    gate: GateOptions | None = None,
    log: Callable[[str], None] = print,
) -> Manifest:
    """Export a checkpoint or an ensemble folder to the bundle directory ``out``; returns its manifest.

    With ``gate``, an input gate (:mod:`svdh_exporter.ood`) is fitted and computed in the graph."""
    import onnx
    import torch

    from .ensemble import is_ensemble

    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"{out}: already exists; choose another --out or pass --force to replace it")
    origin = ensemble_source(source) if is_ensemble(source) else checkpoint_source(source)
    spec = origin.preprocessing
    fitted = None
    if gate is not None:
        from .ood import fit_gate

        fitted = fit_gate(origin.graph, spec, gate.fit_folder, gate.calibration_folder, gate.max_images, log)
        origin.graph.ood = fitted.module
    rng = np.random.default_rng(0)
    example = torch.from_numpy(rng.standard_normal((TRACE_BATCH, 1, spec.height, spec.width), dtype=np.float32))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a bundle is meant to be shared
    try:
        model_path = staging / MODEL_FILE
        log(f"exporting {origin.description} to ONNX (opset {OPSET})")
        export_onnx(origin.graph, example, model_path, log)
        proto = onnx.load(str(model_path))
        onnx.checker.check_model(proto, full_check=True)
        cam_shape = [d.dim_value for d in proto.graph.output[2].type.tensor_type.shape.dim]
        samples = rng.standard_normal((3, 1, spec.height, spec.width), dtype=np.float32)
        agreement = check_against_torch(origin.graph, model_path.read_bytes(), samples)
        log(f"ONNX Runtime matches torch: {agreement}")
        manifest = Manifest(
            name=name or origin.name,
            version=version or origin.version,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            preprocessing=spec,
            outputs=OutputSpec(
                severity_classes=origin.severity_classes,
                cam_height=int(cam_shape[1]),
                cam_width=int(cam_shape[2]),
                cam_method=origin.cam_method,
                ood_threshold=fitted.threshold if fitted else 0.0,
                ood_method=fitted.record["method"] if fitted else "",
                per_area="areas" in origin.graph.output_names,
            ),
            members=origin.members,
            files={MODEL_FILE: sha256_file(model_path)},
            metrics=origin.metrics,
            provenance={
                **origin.provenance,
                "exporter": f"svdh-exporter {__version__}",
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "opset": OPSET,
                "export_check": agreement,
                **({"input_gate": fitted.record} if fitted else {}),
            },
        )
        manifest.write(staging / MANIFEST_NAME)
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
