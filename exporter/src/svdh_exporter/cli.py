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
) -> None:
    """Export CHECKPOINT (one network or an ensemble) as a bundle: model.onnx with score, severity_probs and
    Grad-CAM in one graph, and manifest.json."""
    from .onnx_export import export_bundle

    manifest = export_bundle(checkpoint, out, name=name, version=version, force=force, log=err)
    err(f"wrote {out} ({manifest.name} {manifest.version}, model sha256 {manifest.files['model.onnx'][:12]})")


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


@app.command("triton")
def triton_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    repo: Annotated[Path, typer.Option("--repo", help="Triton model repository to write into.")],
    name: Annotated[str, typer.Option(help="Model name in the repository.")] = "svdh",
    version: Annotated[int, typer.Option(min=1, help="Model version directory.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="max_batch_size for dynamic batching.")] = 8,
    instances: Annotated[int, typer.Option(min=1, help="Model instances.")] = 1,
    kind: Annotated[str, typer.Option(help="Instance kind: cpu or gpu.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model directory.")] = False,
) -> None:
    """Write BUNDLE into a Triton Inference Server model repository (platform onnxruntime_onnx)."""
    from .triton import TritonOptions, write_triton_repository

    options = TritonOptions(name=name, version=version, max_batch_size=max_batch, instances=instances, kind=kind)
    model_dir = write_triton_repository(bundle, repo, options, force=force)
    err(f"wrote {model_dir} (config.pbtxt, {version}/model.onnx, svdh_manifest.json)")


def main() -> None:
    """Console entry point."""
    run_app(app, "svdh-export")
