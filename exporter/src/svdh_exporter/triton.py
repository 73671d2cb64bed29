"""Write a bundle as a Triton Inference Server model repository (``onnxruntime_onnx``).

Layout: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/<version>/model.onnx``,
plus ``REPO/<name>/svdh_manifest.json`` so that clients know the
preprocessing (Triton serves the graph; clients send prepared canvases).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from svdh_runtime.bundle import MODEL_FILE, load_bundle, sha256_file
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import MANIFEST_NAME, Manifest

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
INSTANCE_KINDS = ("cpu", "gpu")


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings written to config.pbtxt."""

    name: str
    version: int = 1
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "cpu"  # cpu or gpu
    max_queue_delay_us: int = 100

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise BundleError(f"Triton model name {self.name!r} may only hold letters, digits, '.', '_' and '-'")
        if self.version < 1 or self.max_batch_size < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise BundleError("version, max batch size and instances must be >= 1, queue delay >= 0")
        if self.kind not in INSTANCE_KINDS:
            raise BundleError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}")


def config_pbtxt(manifest: Manifest, options: TritonOptions) -> str:
    """The model configuration in protobuf text format."""
    spec, outputs = manifest.preprocessing, manifest.outputs
    classes = len(outputs.severity_classes)
    preferred = sorted({b for b in (1, 2, 4, options.max_batch_size) if b <= options.max_batch_size})
    return f"""name: "{options.name}"
platform: "onnxruntime_onnx"
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
  }}
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
  value: {{ string_value: "{manifest.name} {manifest.version} sha256:{manifest.files[MODEL_FILE]}" }}
}}
"""


def write_triton_repository(bundle_dir: Path, repo: Path, options: TritonOptions, force: bool = False) -> Path:
    """Verify the bundle, then write its model directory into ``repo``; returns that directory."""
    bundle = load_bundle(bundle_dir)
    if bundle.manifest.outputs.cam_height < 1:
        raise BundleError(f"{bundle_dir}: manifest has no CAM size; re-export the bundle")
    model_dir = Path(repo) / options.name
    if model_dir.exists() and not force:
        raise BundleError(f"{model_dir}: already exists; pass --force to replace it")
    staging = Path(repo) / f".{options.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / str(options.version)).mkdir(parents=True)
    target = staging / str(options.version) / MODEL_FILE
    target.write_bytes(bundle.model_bytes)
    if sha256_file(target) != bundle.model_sha256:
        raise BundleError(f"{target}: copy does not match the bundle's checksum")
    (staging / "config.pbtxt").write_text(config_pbtxt(bundle.manifest, options), encoding="utf-8")
    shutil.copyfile(Path(bundle_dir) / MANIFEST_NAME, staging / "svdh_manifest.json")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    staging.replace(model_dir)
    return model_dir
