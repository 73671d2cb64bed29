"""``svdh-export``: turn trained checkpoints into bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from svdh_runtime.cli_support import err, run_app

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Export svdh models to bundles.")


@app.callback()
def _root() -> None:
    """Export svdh models to ONNX bundles."""


@app.command("onnx")
def onnx_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (svdh-train fit) or ensemble folder (svdh-train ensemble).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    name: Annotated[Optional[str], typer.Option(help="Model name in the manifest (default: the checkpoint's).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Model version (default: the checkpoint's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle at --out.")] = False,
    ood_fit: Annotated[
        Optional[Path],
        typer.Option("--ood-fit", help="Training radiographs to fit the input gate on (rejects non-hand images)."),
    ] = None,
    ood_calibrate: Annotated[
        Optional[Path],
        typer.Option(
            "--ood-calibrate", help="Other radiographs to set the gate's threshold on (default: a fifth of --ood-fit)."
        ),
    ] = None,
    ood_images: Annotated[int, typer.Option("--ood-images", min=20, help="Most images to fit the gate on.")] = 2000,
) -> None:
    """Export CHECKPOINT (one network or an ensemble) as a bundle: model.onnx with score, severity_probs and
    Grad-CAM in one graph (and an input-gate distance with --ood-fit), and manifest.json."""
    from .onnx_export import GateOptions, export_bundle

    if ood_calibrate is not None and ood_fit is None:
        raise typer.BadParameter("needs --ood-fit", param_hint="--ood-calibrate")
    gate = GateOptions(ood_fit, ood_calibrate, ood_images) if ood_fit is not None else None
    manifest = export_bundle(checkpoint, out, name=name, version=version, force=force, gate=gate, log=err)
    err(f"wrote {out} ({manifest.name} {manifest.version}, model sha256 {manifest.files['model.onnx'][:12]})")


@app.command("add-change")
def add_change(
    checkpoint: Annotated[Path, typer.Argument(help="Paired checkpoint folder (svdh-train fit-change ... /best).")],
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle to add the paired graph to (change.onnx).")],
) -> None:
    """Add a paired network to a bundle as its second graph (baseline and follow-up -> the change of every
    area, with its CAM); then calibrate its changes with `svdh-train calibrate` on a longitudinal set."""
    from .paired_export import add_paired_graph

    add_paired_graph(checkpoint, bundle, log=err)
    err(f"added the paired graph to {bundle}")


@app.command("gate-calibrate")
def gate_calibrate_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory with an input gate.")],
    images: Annotated[
        list[Path], typer.Argument(help="The site's own hand radiographs (files or folders), 20 or more.")
    ],
    quantile: Annotated[float, typer.Option(min=0.5, max=1.0, help="Quantile of their distances.")] = 0.995,
    margin: Annotated[float, typer.Option(min=1.0, help="Factor on that quantile.")] = 1.25,
) -> None:
    """Set BUNDLE's input-gate threshold from a site's own radiographs (e.g. after a detector change).

    The gate keeps its fitted distance; only the threshold moves. Check the result with svdh-train gate-check."""
    from .ood import recalibrate_threshold

    recalibrate_threshold(bundle, images, log=err, quantile=quantile, margin=margin)


@app.command("fp16")
def fp16_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    calibration: Annotated[
        list[Path], typer.Option("--calibration", "-c", help="Radiographs to check FP16 against FP32 (repeat).")
    ],
) -> None:
    """Add model.fp16.onnx (FP16 compute, FP32 inputs/outputs) to BUNDLE after checking it on calibration images."""
    from .fp16 import write_fp16

    check = write_fp16(bundle, calibration)
    err(f"wrote {bundle / 'model.fp16.onnx'}: {check}")


@app.command("int8")
def int8_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    calibration: Annotated[
        list[Path],
        typer.Option(
            "--calibration",
            "-c",
            help="Radiographs (files or folders; repeat) to calibrate the INT8 model on and to check it against "
            "FP32. A few dozen typical of the site's images.",
        ),
    ],
    allow_slower: Annotated[
        bool,
        typer.Option(
            "--allow-slower",
            help="Keep the INT8 model even when it is not faster on this machine (exporting here for another CPU).",
        ),
    ] = False,
) -> None:
    """Add model.int8.onnx (ONNX Runtime static INT8, for CPUs) to BUNDLE when it matches FP32 within the FP16
    tolerances on the calibration images and is faster on this CPU; `svdh-run --backend auto` then uses it on
    CPUs."""
    from svdh_runtime.discovery import discover

    from .int8 import write_int8

    images = discover(calibration).images
    if not images:
        raise typer.BadParameter("no radiographs found", param_hint="--calibration")
    err(f"calibrating INT8 on {len(images)} image(s)")
    check = write_int8(bundle, images, say=err, require_faster=not allow_slower)
    speed = check["speed_cpu"]
    err(
        f"wrote {bundle / 'model.int8.onnx'}: {check['int8_convolutions']} convolutions INT8; "
        f"model time INT8/FP32 {speed['batch1']['ratio']:.2f} at batch 1, {speed['batch8']['ratio']:.2f} at batch 8"
    )


@app.command("ort-optimize")
def ort_optimize_command(bundle: Annotated[Path, typer.Argument(help="Bundle directory.")]) -> None:
    """Add model.ort-cpu.onnx to BUNDLE: model.onnx fully optimised by ONNX Runtime for this kind of CPU, so that
    svdh-run starts sooner on CPUs like it (same ONNX Runtime version, machine and vector extensions; elsewhere
    model.onnx is used)."""
    from svdh_runtime.backends.cpu_optimized import OPTIMIZED_FILE

    from .ort_optimize import write_cpu_optimized

    check = write_cpu_optimized(bundle, say=err)
    start = check["session_start_s"]
    err(
        f"wrote {bundle / OPTIMIZED_FILE}: outputs within {check['max_abs_difference']:.1e} of model.onnx; "
        f"session start {start[OPTIMIZED_FILE]:.3f} s against {start['model.onnx']:.3f} s"
    )


@app.command("build-engine")
def build_engine_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (engines are written to BUNDLE/engines/).")],
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch the engine accepts.")] = 8,
    opt_batch: Annotated[int, typer.Option("--opt-batch", min=1, help="Batch size TensorRT tunes for.")] = 1,
    workspace_mib: Annotated[int, typer.Option("--workspace-mib", min=64, help="Builder workspace limit.")] = 2048,
    version_compatible: Annotated[
        bool, typer.Option("--version-compatible", help="An engine that later TensorRT and tensorrt-lean can run.")
    ] = False,
    timing_cache: Annotated[
        Optional[Path],
        typer.Option(
            help="Timing cache file, reused across builds (default: ~/.cache/svdh/tensorrt/GPU.timing-cache)."
        ),
    ] = None,
    calibration: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--calibration",
            "-c",
            help="Radiographs to validate the engine on (default: phantoms shipped with svdh-exporter).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an engine already built for this GPU and TensorRT.")
    ] = False,
) -> None:
    """Build a TensorRT FP16 engine for this GPU from BUNDLE, validate it against ONNX Runtime, and keep it.

    Needs an NVIDIA GPU and TensorRT 10.12 or later (with its builder); does not need torch."""
    from .engine_build import EngineBuildOptions, build_engine

    if opt_batch > max_batch:
        raise typer.BadParameter("must not exceed --max-batch", param_hint="--opt-batch")
    options = EngineBuildOptions(
        max_batch=max_batch,
        opt_batch=opt_batch,
        workspace_mib=workspace_mib,
        version_compatible=version_compatible,
        timing_cache=timing_cache,
        calibration=tuple(calibration or ()),
        force=force,
    )
    sidecar = build_engine(bundle, options, log=err)
    err(f"wrote {bundle / 'engines' / sidecar.plan} (validation: {sidecar.validation})")


@app.command("triton")
def triton_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    repo: Annotated[Path, typer.Option("--repo", help="Triton model repository to write into.")],
    name: Annotated[
        str, typer.Option(help="Model name in the repository (the ensemble's models add suffixes).")
    ] = "svdh",
    version: Annotated[int, typer.Option(min=1, help="Model version directory.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="max_batch_size for dynamic batching.")] = 8,
    instances: Annotated[int, typer.Option(min=1, help="Instances of each model.")] = 1,
    kind: Annotated[str, typer.Option(help="Instance kind of the ensemble's graph step: cpu or gpu.")] = "cpu",
    ensemble: Annotated[
        Optional[str],
        typer.Option(
            help="Also write an ensemble for GPU sites whose graph step is onnxruntime_onnx (model.onnx) "
            "or tensorrt_plan (an engine from BUNDLE/engines/)."
        ),
    ] = None,
    engine: Annotated[
        Optional[str], typer.Option(help="tensorrt_plan: the engine's plan file name (default: the only one).")
    ] = None,
    backend: Annotated[str, typer.Option(help="The Python model's backend: auto, onnxruntime or tensorrt.")] = "auto",
    interval_level: Annotated[float, typer.Option(help="Level of the score interval in calibrated bundles.")] = 0.9,
    max_queue_delay_us: Annotated[
        int, typer.Option(min=0, help="How long dynamic batching may hold a request (microseconds).")
    ] = 100,
    force: Annotated[bool, typer.Option("--force", help="Replace existing model directories.")] = False,
) -> None:
    """Write BUNDLE into a Triton Inference Server model repository: the Python-backend model NAME (file bytes
    in, svdh-run's answers out) and, with --ensemble, NAME_ensemble for GPU sites."""
    from .triton import TritonOptions, write_triton_repository

    options = TritonOptions(
        name=name,
        version=version,
        max_batch_size=max_batch,
        instances=instances,
        kind=kind,
        ensemble=ensemble,
        engine=engine,
        backend=backend,
        interval_level=interval_level,
        max_queue_delay_us=max_queue_delay_us,
    )
    for model_dir in write_triton_repository(bundle, repo, options, force=force):
        err(f"wrote {model_dir}")


def main() -> None:
    """Console entry point."""
    run_app(app, "svdh-export")
