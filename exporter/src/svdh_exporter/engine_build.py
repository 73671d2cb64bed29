"""``svdh-export build-engine``: a TensorRT FP16 engine for this box, validated before it is kept.

Runs on the edge device and imports no torch. Steps:

1. the bundle's mixed-precision ONNX (``model.fp16.onnx``), made first if missing;
2. a strongly typed network from the TensorRT ONNX parser (TensorRT 11 knows
   no other kind; 10.12+ opts in with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``,
   which 11 accepts and ignores, so one code path serves both);
3. an optimization profile for batch 1..N, a workspace limit, a persistent
   timing cache, optionally ``VERSION_COMPATIBLE`` (runs on ``tensorrt-lean``);
4. the engine run against ONNX Runtime FP32 on calibration radiographs: score
   within 0.5 points, probabilities within 0.01, CAM correlation >= 0.99, or
   nothing is written;
5. ``engines/NAME.plan`` and its JSON sidecar (``svdh_runtime.engines``),
   written atomically, sidecar last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from svdh_runtime.backends.cuda import GpuUnavailable
from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
from svdh_runtime.backends.tensorrt import TensorRTBackend, TensorRTUnavailable, this_device
from svdh_runtime.bundle import Bundle, load_bundle, sha256_bytes
from svdh_runtime.engines import (
    ENGINES_DIR,
    PLAN_SUFFIX,
    SOURCE_ONNX,
    BatchProfile,
    DeviceInfo,
    EngineSidecar,
    engine_stem,
)
from svdh_runtime.errors import MissingDependencyError, SvdhError
from svdh_runtime.files import atomic_write_bytes, atomic_write_text

from .fp16 import PrecisionError, calibration_batch, compare_backends, within_tolerance, write_fp16

SHIPPED_CALIBRATION = Path(__file__).resolve().parent / "calibration"
DEFAULT_TIMING_CACHE_DIR = Path.home() / ".cache" / "svdh" / "tensorrt"


class EngineBuildError(SvdhError):
    """TensorRT could not build an engine from the bundle; the message says why."""


@dataclasses.dataclass(frozen=True)
class EngineBuildOptions:
    """How to build: batch profile, workspace, timing cache, version compatibility, calibration images."""

    max_batch: int = 8
    opt_batch: int = 1
    workspace_mib: int = 2048
    version_compatible: bool = False
    timing_cache: Path | None = None  # default: ~/.cache/svdh/tensorrt/<gpu>.timing-cache
    calibration: tuple[Path, ...] = ()  # default: the radiographs shipped with svdh-exporter
    force: bool = False

    def profile(self) -> BatchProfile:
        return BatchProfile(1, self.opt_batch, self.max_batch)


def calibration_files(given: tuple[Path, ...]) -> list[Path]:
    """The calibration radiographs: those given, else the phantoms shipped with svdh-exporter."""
    files = list(given) or sorted(SHIPPED_CALIBRATION.glob("*.png"))
    if not files:
        raise EngineBuildError("no calibration images (pass --calibration FILE)")
    return files


def collecting_logger(trt: ModuleType):  # noqa: ANN201
    """A TensorRT logger that keeps errors for the one-line failure message."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, message) -> None:  # noqa: ANN001
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(" ".join(str(message).split()))

    return Logger()


def unsupported_operators(parser, onnx_bytes: bytes) -> list[str]:  # noqa: ANN001
    """ONNX operators in the model that the TensorRT parser says it cannot import."""
    import onnx

    supports = getattr(parser, "supports_operator", None)
    if supports is None:
        return []
    graph = onnx.ModelProto.FromString(onnx_bytes).graph
    return sorted({node.op_type for node in graph.node if not supports(node.op_type)})


def parse_network(trt: ModuleType, builder, logger, onnx_bytes: bytes):  # noqa: ANN001, ANN201
    """A strongly typed network from the ONNX bytes; :class:`EngineBuildError` names an unsupported op."""
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on 10.x, accepted and ignored on 11.x
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    missing = unsupported_operators(parser, onnx_bytes)
    if missing:
        raise EngineBuildError(f"TensorRT {trt.__version__} does not support ONNX operator(s) {', '.join(missing)}")
    if not parser.parse(onnx_bytes):
        if parser.num_errors:
            error = parser.get_error(0)
            node = error.node_name() or f"#{error.node()}"
            raise EngineBuildError(
                f"TensorRT cannot import node {node} (operator {error.node_operator() or '?'}): {error.desc()}"
            )
        raise EngineBuildError("TensorRT's ONNX parser rejected the model")
    return network, parser


def build_plan(
    trt: ModuleType, onnx_bytes: bytes, input_shape: tuple[int, int, int], options: EngineBuildOptions, cache: bytes
) -> tuple[bytes, bytes]:
    """(serialized plan, updated timing cache) for ``onnx_bytes`` with the options' profile and limits."""
    logger = collecting_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, onnx_bytes)
    if network.num_inputs != 1:
        raise EngineBuildError(f"model has {network.num_inputs} inputs; expected one image input")
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)  # the lean runtime is embedded in the plan
    profile = options.profile()
    shapes = builder.create_optimization_profile()
    shapes.set_shape(input_name, (profile.min, *input_shape), (profile.opt, *input_shape), (profile.max, *input_shape))
    config.add_optimization_profile(shapes)
    timing_cache = config.create_timing_cache(cache)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = logger.errors[-1] if logger.errors else "no message from TensorRT"
        if any("workspace" in m.lower() or "out of memory" in m.lower() for m in logger.errors):
            raise EngineBuildError(
                f"out of workspace: TensorRT could not build within {options.workspace_mib} MiB "
                f"(raise --workspace-mib; TensorRT said: {detail[:160]})"
            )
        raise EngineBuildError(f"TensorRT could not build the engine: {detail[:200]}")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _timing_cache_path(options: EngineBuildOptions, device: DeviceInfo) -> Path:
    if options.timing_cache is not None:
        return options.timing_cache
    return DEFAULT_TIMING_CACHE_DIR / f"{engine_stem(device, False)}.timing-cache"


def _ensure_fp16(bundle_dir: Path, calibration: list[Path], log: Callable[[str], None]) -> Bundle:
    bundle = load_bundle(bundle_dir)
    if SOURCE_ONNX not in bundle.manifest.files:
        log(f"making {SOURCE_ONNX} (FP16 compute, FP32 inputs/outputs and sensitive ops)")
        check = write_fp16(bundle_dir, calibration)
        log(f"  {SOURCE_ONNX} vs model.onnx under ONNX Runtime: {check}")
        bundle = load_bundle(bundle_dir)
    return bundle


def validate_engine(
    plan: bytes, sidecar: EngineSidecar, trt: ModuleType, bundle: Bundle, batch: np.ndarray
) -> dict[str, float]:
    """The engine against ONNX Runtime FP32 on the calibration batch; raises :class:`PrecisionError` out of tolerance."""
    engine = TensorRTBackend(plan, sidecar, trt)
    reference = OnnxRuntimeBackend(bundle.model_bytes)
    try:
        check = compare_backends(reference, engine, batch)
    finally:
        engine.close()
    if not within_tolerance(check):
        raise PrecisionError(f"the engine does not reproduce the FP32 model ({check}); not kept")
    return check


def build_engine(bundle_dir: Path, options: EngineBuildOptions, log: Callable[[str], None] = print) -> EngineSidecar:
    """Build, validate and save a TensorRT engine for this box; returns its sidecar."""
    bundle_dir = Path(bundle_dir)
    try:
        device, trt = this_device(lean_allowed=False)
    except TensorRTUnavailable as exc:
        raise MissingDependencyError(f"building engines needs TensorRT with its builder: {exc}") from None
    except GpuUnavailable as exc:
        raise EngineBuildError(f"building engines needs an NVIDIA GPU: {exc}") from None
    if not os.access(bundle_dir, os.W_OK):
        raise EngineBuildError(f"{bundle_dir}: cannot write engines here (copy the bundle to a writable folder)")
    calibration = calibration_files(options.calibration)
    bundle = _ensure_fp16(bundle_dir, calibration, log)
    stem = engine_stem(device, options.version_compatible)
    engines = bundle_dir / ENGINES_DIR
    if (engines / f"{stem}.json").exists() and not options.force:
        raise EngineBuildError(f"{engines / stem}.json exists (use --force to rebuild)")
    onnx_bytes = (bundle_dir / SOURCE_ONNX).read_bytes()  # verified by load_bundle just above
    if sha256_bytes(onnx_bytes) != bundle.manifest.files[SOURCE_ONNX]:
        raise EngineBuildError(f"{SOURCE_ONNX} changed while the engine was being prepared")
    spec = bundle.manifest.preprocessing
    input_shape = (spec.channels, spec.height, spec.width)
    cache_path = _timing_cache_path(options, device)
    cache = cache_path.read_bytes() if cache_path.is_file() else b""
    log(
        f"building a TensorRT {device.tensorrt_version} FP16 engine for {device.gpu_name} "
        f"(batch 1..{options.max_batch}, workspace {options.workspace_mib} MiB"
        f"{', version-compatible' if options.version_compatible else ''}); this takes a few minutes"
    )
    plan, cache = build_plan(trt, onnx_bytes, input_shape, options, cache)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache_path, cache)
    sidecar = EngineSidecar(
        plan=f"{stem}{PLAN_SUFFIX}",
        plan_sha256=sha256_bytes(plan),
        source_onnx=SOURCE_ONNX,
        source_onnx_sha256=bundle.manifest.files[SOURCE_ONNX],
        gpu_name=device.gpu_name,
        compute_capability=device.compute_capability,
        tensorrt_version=device.tensorrt_version,
        precision="fp16-mixed (strongly typed)",
        version_compatible=options.version_compatible,
        profile=options.profile(),
        input_shape=input_shape,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (3.10)
    )
    log(f"validating the engine against ONNX Runtime FP32 on {len(calibration)} calibration image(s)")
    check = validate_engine(plan, sidecar, trt, bundle, calibration_batch(calibration, bundle_dir))
    sidecar = dataclasses.replace(sidecar, validation={**check, "calibration": [p.name for p in calibration]})
    engines.mkdir(exist_ok=True)
    atomic_write_bytes(engines / sidecar.plan, plan)
    atomic_write_text(engines / f"{stem}.json", json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return sidecar
