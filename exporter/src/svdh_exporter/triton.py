"""Write a bundle as a Triton Inference Server model repository (``onnxruntime_onnx`` or ``tensorrt_plan``).

Layout: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/<version>/model.onnx``
(or ``model.plan``, a checksum-verified TensorRT engine from ``BUNDLE/engines/``
with its sidecar beside the config as ``svdh_engine.json``), plus
``REPO/<name>/svdh_manifest.json`` so that clients know the preprocessing
(Triton serves the graph; clients send prepared canvases).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from svdh_runtime.bundle import MODEL_FILE, Bundle, load_bundle, sha256_file
from svdh_runtime.engines import ENGINES_DIR, EngineSidecar, read_sidecars, read_verified_plan
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import MANIFEST_NAME, Manifest

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
INSTANCE_KINDS = ("cpu", "gpu")
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings written to config.pbtxt."""

    name: str
    version: int = 1
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "cpu"  # cpu or gpu
    max_queue_delay_us: int = 100
    platform: str = "onnxruntime_onnx"
    engine: str | None = None  # tensorrt_plan: the plan's file name in BUNDLE/engines/ (default: the only one)

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise BundleError(f"Triton platform must be one of {', '.join(PLATFORMS)}")
        if self.platform == "tensorrt_plan" and self.kind != "gpu":
            raise BundleError("a tensorrt_plan model runs on GPU instances only (--kind gpu)")
        if not _NAME.match(self.name):
            raise BundleError(f"Triton model name {self.name!r} may only hold letters, digits, '.', '_' and '-'")
        if self.version < 1 or self.max_batch_size < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise BundleError("version, max batch size and instances must be >= 1, queue delay >= 0")
        if self.kind not in INSTANCE_KINDS:
            raise BundleError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}")


def _joint_outputs(per_area: bool) -> str:
    """The joint head's outputs (areas, hands, joints), for bundles that have them."""
    if not per_area:
        return ""
    from svdh_runtime.areas import HANDS, grade_columns

    columns = len(grade_columns())
    shapes = {"areas": f"{columns}", "hands": f"{len(HANDS)}", "joints": f"{columns}, 2"}
    return "".join(
        f""",
  {{
    name: "{name}"
    data_type: TYPE_FP32
    dims: [ {dims} ]
  }}"""
        for name, dims in shapes.items()
    )


def config_pbtxt(manifest: Manifest, options: TritonOptions, served_sha256: str | None = None) -> str:
    """The model configuration in protobuf text format."""
    spec, outputs = manifest.preprocessing, manifest.outputs
    classes = len(outputs.severity_classes)
    preferred = sorted({b for b in (1, 2, 4, options.max_batch_size) if b <= options.max_batch_size})
    return f"""name: "{options.name}"
platform: "{options.platform}"
max_batch_size: {options.max_batch_size}
input [
  {{
    name: "image"
    data_type: TYPE_FP32
    dims: [ {spec.channels}, {spec.height}, {spec.width} ]
  }}
]
output [
  {{
    name: "score"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: {{ shape: [ ] }}
  }},
  {{
    name: "severity_probs"
    data_type: TYPE_FP32
    dims: [ {classes} ]
  }},
  {{
    name: "cam"
    data_type: TYPE_FP32
    dims: [ {outputs.cam_height}, {outputs.cam_width} ]
  }}{_joint_outputs(outputs.per_area)}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in preferred)} ]
  max_queue_delay_microseconds: {options.max_queue_delay_us}
}}
instance_group [
  {{
    count: {options.instances}
    kind: KIND_{options.kind.upper()}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
parameters {{
  key: "svdh_model"
  value: {{ string_value: "{manifest.name} {manifest.version} sha256:{served_sha256 or manifest.files[MODEL_FILE]}" }}
}}
"""


def choose_engine(bundle: Bundle, options: TritonOptions) -> EngineSidecar:
    """The engine to serve: the one named, else the only one in ``BUNDLE/engines/``; its batch profile must fit."""
    sidecars, problems = read_sidecars(bundle)
    if options.engine is not None:
        sidecars = [s for s in sidecars if s.plan == options.engine]
    if len(sidecars) != 1:
        found = ", ".join(s.plan for s in read_sidecars(bundle)[0]) or "none"
        hint = "; ".join(problems)
        raise BundleError(
            f"{bundle.path}: choose one TensorRT engine with --engine (found: {found}{'; ' + hint if hint else ''})"
        )
    sidecar = sidecars[0]
    if options.max_batch_size > sidecar.profile.max:
        raise BundleError(
            f"{ENGINES_DIR}/{sidecar.plan} accepts batches up to {sidecar.profile.max}; lower --max-batch"
        )
    return sidecar


def write_triton_repository(bundle_dir: Path, repo: Path, options: TritonOptions, force: bool = False) -> Path:
    """Verify the bundle, then write its model directory into ``repo``; returns that directory."""
    bundle = load_bundle(bundle_dir)
    if bundle.manifest.outputs.cam_height < 1:
        raise BundleError(f"{bundle_dir}: manifest has no CAM size; re-export the bundle")
    sidecar = choose_engine(bundle, options) if options.platform == "tensorrt_plan" else None
    if sidecar is None:
        served, payload, expected = MODEL_FILE, bundle.model_bytes, bundle.model_sha256
    else:
        served, payload, expected = "model.plan", read_verified_plan(bundle, sidecar), sidecar.plan_sha256
    model_dir = Path(repo) / options.name
    if model_dir.exists() and not force:
        raise BundleError(f"{model_dir}: already exists; pass --force to replace it")
    staging = Path(repo) / f".{options.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / str(options.version)).mkdir(parents=True)
    target = staging / str(options.version) / served
    if sidecar is not None:
        (staging / "svdh_engine.json").write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n", encoding="utf-8")
    target.write_bytes(payload)
    if sha256_file(target) != expected:
        raise BundleError(f"{target}: copy does not match the bundle's checksum")
    (staging / "config.pbtxt").write_text(config_pbtxt(bundle.manifest, options, expected), encoding="utf-8")
    shutil.copyfile(Path(bundle_dir) / MANIFEST_NAME, staging / "svdh_manifest.json")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    staging.replace(model_dir)
    return model_dir
