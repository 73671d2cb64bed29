"""Trained checkpoints: ``weights.safetensors`` plus ``checkpoint.json``.

The trainer writes them with :func:`save_checkpoint`; the exporter reads them
with :func:`read_checkpoint_info` (no torch) and :func:`load_network` (torch).
Weights are safetensors only, and their sha256 is checked before loading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svdh_runtime.bundle import sha256_file
from svdh_runtime.errors import BundleError
from svdh_runtime.files import atomic_write_text
from svdh_runtime.manifest import Preprocessing, SeverityClass, dataclass_from_mapping

if TYPE_CHECKING:
    from .model import ModelSpec, SvdhNet

CHECKPOINT_FORMAT = "svdh-checkpoint"
CHECKPOINT_VERSION = 1
SPEC_NAME = "checkpoint.json"
WEIGHTS_NAME = "weights.safetensors"


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything but the weights: what the network is and how it was made."""

    name: str
    version: str
    model: Mapping[str, Any]  # ModelSpec fields
    preprocessing: Preprocessing
    severity_classes: tuple[SeverityClass, ...]
    weights_sha256: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)


def save_checkpoint(
    directory: Path,
    net: SvdhNet,
    *,
    name: str,
    version: str,
    preprocessing: Preprocessing,
    severity_classes: tuple[SeverityClass, ...],
    metrics: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights (safetensors) and the JSON spec, each atomically."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    partial = directory / (WEIGHTS_NAME + ".partial")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(partial), metadata={"format": CHECKPOINT_FORMAT})
    partial.replace(weights)
    spec = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "name": name,
        "version": version,
        "model": net.spec.to_dict(),
        "preprocessing": asdict(preprocessing),
        "severity_classes": [asdict(c) for c in severity_classes],
        "weights_sha256": sha256_file(weights),
        "metrics": dict(metrics or {}),
        "provenance": dict(provenance or {}),
    }
    atomic_write_text(directory / SPEC_NAME, json.dumps(spec, indent=2) + "\n")
    return directory


def read_checkpoint_info(directory: Path) -> CheckpointInfo:
    """Read and validate ``checkpoint.json`` (no torch needed)."""
    path = Path(directory) / SPEC_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{directory}: not a svdh checkpoint (no {SPEC_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable checkpoint spec ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise BundleError(f"{path}: not a svdh checkpoint spec")
    if data.get("format_version") != CHECKPOINT_VERSION:
        raise BundleError(f"{path}: checkpoint format_version {data.get('format_version')!r} is not supported")
    try:
        return CheckpointInfo(
            name=str(data["name"]),
            version=str(data["version"]),
            model=dict(data["model"]),
            preprocessing=dataclass_from_mapping(Preprocessing, data["preprocessing"], "preprocessing"),
            severity_classes=tuple(
                dataclass_from_mapping(SeverityClass, c, "severity_classes[]") for c in data["severity_classes"]
            ),
            weights_sha256=str(data["weights_sha256"]),
            metrics=dict(data.get("metrics", {})),
            provenance=dict(data.get("provenance", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: malformed checkpoint spec ({exc})") from None


def model_spec(info: CheckpointInfo) -> ModelSpec:
    from .model import ModelSpec

    try:
        return ModelSpec(**info.model)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"checkpoint model spec is invalid ({exc})") from None


def load_network(directory: Path) -> tuple[SvdhNet, CheckpointInfo]:
    """Build the network and load its weights after checking their sha256."""
    from safetensors.torch import load_file

    from .model import SvdhNet

    info = read_checkpoint_info(directory)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"{directory}: {WEIGHTS_NAME} is missing")
    if sha256_file(weights) != info.weights_sha256:
        raise BundleError(f"{weights}: checksum mismatch; the checkpoint is damaged or was altered")
    net = SvdhNet(model_spec(info))
    try:
        net.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not fit the model spec ({str(exc).splitlines()[0]})") from None
    return net.eval(), info
