"""TensorRT engines inside a bundle: the JSON sidecar, and which engine (if any) this box may load.

An engine is ``BUNDLE/engines/NAME.plan`` with ``NAME.json`` beside it. The
sidecar, never a header in the plan, says what the plan was built from and
for: the source ONNX (file and sha256), GPU name and compute capability,
TensorRT version, precision, batch profile, and the plan's own sha256. An
engine is loaded only when its sidecar matches this GPU, this TensorRT and
this bundle's model, and the plan's bytes match the recorded sha256 (plans
are executable artifacts). This module is the one source of truth for the
sidecar schema: ``svdh-export build-engine`` writes it, the runtime reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bundle import Bundle, sha256_bytes
from .errors import BundleError

ENGINES_DIR = "engines"
SIDECAR_SCHEMA = 1
PLAN_SUFFIX = ".plan"
SOURCE_ONNX = "model.fp16.onnx"


class EngineError(BundleError):
    """An engine cannot be used: stale, damaged, altered, or refused by TensorRT."""


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU and TensorRT runtime of this box, as far as engines care."""

    gpu_name: str
    compute_capability: str  # "8.9"
    tensorrt_version: str  # "10.13.0.35"
    tensorrt_module: str = "tensorrt"  # or "tensorrt_lean": runs version-compatible engines only

    def describe(self) -> str:
        return f"{self.gpu_name} (sm_{self.compute_capability.replace('.', '')}), TensorRT {self.tensorrt_version}"


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile an engine was built with (batch sizes it accepts)."""

    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EngineError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )


@dataclass(frozen=True)
class EngineSidecar:
    """What ``NAME.json`` records about ``NAME.plan``."""

    plan: str
    plan_sha256: str
    source_onnx: str
    source_onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    version_compatible: bool
    profile: BatchProfile
    input_shape: tuple[int, int, int]  # C, H, W
    built_at: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SIDECAR_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> EngineSidecar:
        """Parse and type-check a sidecar; :class:`EngineError` names the bad field."""
        if not isinstance(data, dict):
            raise EngineError(f"{where}: sidecar is not a JSON object")
        if data.get("schema_version") != SIDECAR_SCHEMA:
            raise EngineError(f"{where}: unsupported sidecar schema_version {data.get('schema_version')!r}")
        text_fields = (
            "plan",
            "plan_sha256",
            "source_onnx",
            "source_onnx_sha256",
            "gpu_name",
            "compute_capability",
            "tensorrt_version",
            "precision",
        )
        for name in text_fields:
            if not isinstance(data.get(name), str) or not data[name]:
                raise EngineError(f"{where}: sidecar field {name!r} must be a non-empty string")
        if not isinstance(data.get("version_compatible"), bool):
            raise EngineError(f"{where}: sidecar field 'version_compatible' must be true or false")
        profile = data.get("profile")
        if not isinstance(profile, dict) or not all(isinstance(profile.get(k), int) for k in ("min", "opt", "max")):
            raise EngineError(f"{where}: sidecar field 'profile' must hold integers min, opt, max")
        shape = data.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise EngineError(f"{where}: sidecar field 'input_shape' must be [C, H, W]")
        if Path(data["plan"]).name != data["plan"] or not data["plan"].endswith(PLAN_SUFFIX):
            raise EngineError(f"{where}: sidecar names a plan outside engines/: {data['plan']!r}")
        try:
            batch_profile = BatchProfile(profile["min"], profile["opt"], profile["max"])
        except EngineError as exc:
            raise EngineError(f"{where}: {exc}") from None
        return cls(
            plan=data["plan"],
            plan_sha256=data["plan_sha256"],
            source_onnx=data["source_onnx"],
            source_onnx_sha256=data["source_onnx_sha256"],
            gpu_name=data["gpu_name"],
            compute_capability=data["compute_capability"],
            tensorrt_version=data["tensorrt_version"],
            precision=data["precision"],
            version_compatible=data["version_compatible"],
            profile=batch_profile,
            input_shape=tuple(shape),
            built_at=str(data.get("built_at", "")),
            validation=dict(data.get("validation") or {}),
        )

    def describe(self) -> str:
        kind = ", version-compatible" if self.version_compatible else ""
        return (
            f"{self.gpu_name} (sm_{self.compute_capability.replace('.', '')}), TensorRT {self.tensorrt_version}{kind}"
        )


def engine_stem(device: DeviceInfo, version_compatible: bool) -> str:
    """File stem of the engine built on ``device``: GPU, compute capability, TensorRT version, precision."""
    gpu = re.sub(r"[^a-z0-9]+", "-", device.gpu_name.lower()).strip("-") or "gpu"
    kind = "-vc" if version_compatible else ""
    return f"{gpu}-sm{device.compute_capability.replace('.', '')}-trt{device.tensorrt_version}-fp16{kind}"


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.13.0.35"`` -> ``(10, 13, 0, 35)``."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:4])


def mismatch(sidecar: EngineSidecar, device: DeviceInfo, bundle: Bundle) -> str | None:
    """Why this engine may not run here (``None`` when it may)."""
    expected_source = bundle.manifest.files.get(sidecar.source_onnx)
    if expected_source is None or expected_source != sidecar.source_onnx_sha256:
        return "built from another model than this bundle's"
    if sidecar.compute_capability != device.compute_capability or sidecar.gpu_name != device.gpu_name:
        return f"built for {sidecar.describe()}; this box has {device.describe()}"
    built, here = version_tuple(sidecar.tensorrt_version), version_tuple(device.tensorrt_version)
    if sidecar.version_compatible:
        if built[:1] != here[:1] or here < built:
            return f"version-compatible engine from TensorRT {sidecar.tensorrt_version} cannot run on {device.tensorrt_version}"
    elif device.tensorrt_module != "tensorrt":
        return f"the lean TensorRT runtime runs only version-compatible engines ({sidecar.plan} is not)"
    elif built != here:
        return f"built for {sidecar.describe()}; this box has {device.describe()}"
    return None


def read_sidecars(bundle: Bundle) -> tuple[list[EngineSidecar], list[str]]:
    """Every readable sidecar under ``BUNDLE/engines/`` and a reason for each unreadable one."""
    folder = bundle.path / ENGINES_DIR
    sidecars, problems = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        where = f"{ENGINES_DIR}/{path.name}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            sidecars.append(EngineSidecar.from_dict(data, where))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            problems.append(f"{where}: unreadable sidecar")
        except EngineError as exc:
            problems.append(str(exc))
    return sidecars, problems


@dataclass(frozen=True)
class EngineSearch:
    """The engine chosen for this box, or the reasons none was."""

    sidecar: EngineSidecar | None
    reasons: list[str]

    def explain(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "the bundle holds no TensorRT engine"


def find_engine(
    bundle: Bundle, device: DeviceInfo, read: tuple[list[EngineSidecar], list[str]] | None = None
) -> EngineSearch:
    """The newest engine whose sidecar matches this box and bundle; stale ones are only explained.

    ``read``: the result of :func:`read_sidecars` when the caller has it already."""
    sidecars, reasons = read if read is not None else read_sidecars(bundle)
    reasons = list(reasons)
    usable = []
    for sidecar in sidecars:
        why = mismatch(sidecar, device, bundle)
        if why is None:
            usable.append(sidecar)
        else:
            reasons.append(f"{ENGINES_DIR}/{sidecar.plan}: {why}")
    if not usable:
        return EngineSearch(None, reasons)
    # An engine built for exactly this TensorRT beats a version-compatible one; then the newest build.
    best = max(usable, key=lambda s: (not s.version_compatible, version_tuple(s.tensorrt_version), s.built_at))
    return EngineSearch(best, reasons)


def read_verified_plan(bundle: Bundle, sidecar: EngineSidecar) -> bytes:
    """The plan's bytes, only after they match the sidecar's sha256."""
    path = bundle.path / ENGINES_DIR / sidecar.plan
    try:
        data = path.read_bytes()
    except OSError:
        raise EngineError(f"{ENGINES_DIR}/{sidecar.plan} is named by its sidecar but missing") from None
    if sha256_bytes(data) != sidecar.plan_sha256:
        raise EngineError(f"{ENGINES_DIR}/{sidecar.plan}: checksum mismatch; the engine is damaged or was altered")
    return data
