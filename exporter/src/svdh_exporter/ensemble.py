"""Ensemble folders: member checkpoints plus a linear combiner, exported as one graph.

``svdh-train ensemble`` writes ``ensemble.json`` into a folder; ``svdh-export
onnx`` turns that folder into one bundle (see :class:`~.model.EnsembleCamGraph`).
Member checkpoints are referenced by path and pinned by their weights' sha256,
so a combiner is never exported with members it was not fitted for.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svdh_runtime.errors import BundleError
from svdh_runtime.files import atomic_write_text
from svdh_runtime.manifest import dataclass_from_mapping

from .checkpoint import CheckpointInfo, read_checkpoint_info

if TYPE_CHECKING:
    from .model import EnsembleCamGraph, SvdhNet

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "svdh-ensemble"
COMBINERS = ("mean", "ridge")
ASPECT_TOLERANCE = 0.01  # members must share the canvas aspect ratio within 1 %


@dataclass(frozen=True)
class MemberRef:
    """One member: its checkpoint folder (relative to the ensemble folder or absolute) and its weight."""

    checkpoint: str
    weight: float
    weights_sha256: str


@dataclass(frozen=True)
class EnsembleSpec:
    """What ``ensemble.json`` holds."""

    name: str
    version: str
    combiner: str  # "mean" or "ridge"
    bias: float
    members: tuple[MemberRef, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict)  # e.g. out-of-fold metrics of the combination
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {', '.join(COMBINERS)}, found {self.combiner!r}")
        if len(self.members) < 2:
            raise ValueError("an ensemble needs at least two members")
        if not all(math.isfinite(m.weight) for m in self.members) or not math.isfinite(self.bias):
            raise ValueError("ensemble weights and bias must be finite numbers")


def is_ensemble(directory: Path) -> bool:
    """True when ``directory`` is an ensemble folder (rather than a checkpoint)."""
    return (Path(directory) / ENSEMBLE_FILE).is_file()


def write_ensemble(directory: Path, spec: EnsembleSpec) -> Path:
    """Write ``ensemble.json`` atomically; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {"format": ENSEMBLE_FORMAT, **dataclasses.asdict(spec)}
    path = directory / ENSEMBLE_FILE
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_ensemble(directory: Path) -> EnsembleSpec:
    """Read and validate ``ensemble.json``."""
    path = Path(directory) / ENSEMBLE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{directory}: not an ensemble folder (no {ENSEMBLE_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ensemble file ({exc})") from None
    if not isinstance(data, dict) or data.pop("format", None) != ENSEMBLE_FORMAT:
        raise BundleError(f"{path}: not a svdh ensemble file")
    try:
        members = tuple(dataclass_from_mapping(MemberRef, m, "members[]") for m in data.pop("members", []))
        return dataclass_from_mapping(EnsembleSpec, {**data, "members": members}, "ensemble")
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: malformed ensemble file ({exc})") from None


def member_path(directory: Path, ref: MemberRef) -> Path:
    """The checkpoint folder of a member."""
    path = Path(ref.checkpoint)
    return path if path.is_absolute() else Path(directory) / path


def check_members(directory: Path, spec: EnsembleSpec) -> list[CheckpointInfo]:
    """Read every member's checkpoint spec and check that they can form one graph (no torch needed)."""
    infos = []
    for ref in spec.members:
        info = read_checkpoint_info(member_path(directory, ref))
        if info.weights_sha256 != ref.weights_sha256:
            raise BundleError(
                f"{member_path(directory, ref)}: weights changed since the ensemble was fitted "
                f"(sha256 {info.weights_sha256[:12]}, ensemble expects {ref.weights_sha256[:12]}); refit the ensemble"
            )
        infos.append(info)
    first = infos[0]
    for info in infos[1:]:
        if info.severity_classes != first.severity_classes:
            raise BundleError(f"ensemble members disagree on the severity classes ({first.name} vs {info.name})")
        same = dataclasses.replace(
            info.preprocessing,
            height=first.preprocessing.height,
            width=first.preprocessing.width,
            mm_per_pixel=first.preprocessing.mm_per_pixel,
        )
        if same != first.preprocessing:
            raise BundleError(
                f"ensemble members disagree on intensity preprocessing ({first.name} vs {info.name}); "
                "only the input size may differ"
            )
    _check_physical_extent(infos)
    aspects = [i.preprocessing.width / i.preprocessing.height for i in infos]
    if max(aspects) / min(aspects) - 1.0 > ASPECT_TOLERANCE:
        sizes = ", ".join(f"{i.preprocessing.height}x{i.preprocessing.width}" for i in infos)
        raise BundleError(f"ensemble members must share one aspect ratio (inputs {sizes})")
    return infos


def _check_physical_extent(infos: list[CheckpointInfo]) -> None:
    """Members drawn at a physical scale must all be, over the same field of view (within 1 %)."""
    scaled = [i.preprocessing.mm_per_pixel > 0 for i in infos]
    if not any(scaled):
        return
    if not all(scaled):
        raise BundleError("ensemble members disagree on the physical scale: some set mm_per_pixel, some fit the canvas")
    heights = [i.preprocessing.height * i.preprocessing.mm_per_pixel for i in infos]
    if max(heights) / min(heights) - 1.0 > ASPECT_TOLERANCE:
        fields = ", ".join(f"{i.name}: {h:.0f} mm" for i, h in zip(infos, heights))
        raise BundleError(f"ensemble members must see the same field (canvas height x mm_per_pixel: {fields})")


def canvas_of(infos: list[CheckpointInfo]) -> CheckpointInfo:
    """The member whose (largest) input size becomes the ensemble's canvas."""
    return max(infos, key=lambda i: i.preprocessing.height * i.preprocessing.width)


def load_ensemble(directory: Path) -> tuple[EnsembleCamGraph, list[tuple[SvdhNet, CheckpointInfo]], EnsembleSpec]:
    """Load every member (checksums verified) and build the export graph."""
    from .checkpoint import load_network
    from .model import EnsembleCamGraph

    spec = read_ensemble(directory)
    infos = check_members(directory, spec)
    loaded = [load_network(member_path(directory, ref)) for ref in spec.members]
    canvas = canvas_of(infos).preprocessing
    graph = EnsembleCamGraph(
        [net for net, _ in loaded],
        [(info.preprocessing.height, info.preprocessing.width) for info in infos],
        [ref.weight for ref in spec.members],
        spec.bias,
        (canvas.height, canvas.width),
    )
    return graph.eval(), loaded, spec
