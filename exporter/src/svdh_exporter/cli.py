"""``svdh-export``: turn trained checkpoints into bundles."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from svdh_runtime.errors import ExitCode, SvdhError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Export svdh models to bundles.")


@app.callback()
def _root() -> None:
    """Export svdh models to ONNX bundles."""


@app.command("onnx")
def onnx_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory written by svdh-train fit.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    name: Annotated[Optional[str], typer.Option(help="Model name in the manifest (default: the checkpoint's).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Model version (default: the checkpoint's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle at --out.")] = False,
) -> None:
    """Export CHECKPOINT as a bundle: model.onnx (score, severity_probs, Grad-CAM) and manifest.json."""
    from .onnx_export import export_bundle

    manifest = export_bundle(checkpoint, out, name=name, version=version, force=force, log=_err)
    _err(f"wrote {out} ({manifest.name} {manifest.version}, model sha256 {manifest.files['model.onnx'][:12]})")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    """Console entry point: expected failures print one line and exit with their code."""
    try:
        app(standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except SvdhError as exc:
        _err(f"svdh-export: error: {exc}")
        sys.exit(int(exc.exit_code))
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("SVDH_DEBUG"):
            raise
        _err(f"svdh-export: unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]} (set SVDH_DEBUG=1 for details)")
        sys.exit(int(ExitCode.UNEXPECTED))
