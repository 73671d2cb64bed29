"""``svdh-run``: score hand radiographs from the command line.

Exit codes: 0 every input scored; 2 at least one input could not be scored
(the others still are); 3 the model bundle is missing, damaged or unusable;
1 anything else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .backends.choice import BackendChoice
from .cli_support import err, run_app
from .errors import ExitCode

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Score hand radiographs (van der Heijde modified Sharp, hands and wrists, 0-280).",
)


@app.command()
def run(
    images: Annotated[list[Path], typer.Argument(help="DICOM, PNG or JPEG files to score.", show_default=False)],
    model: Annotated[
        Optional[Path],
        typer.Option("--model", "-m", help="Bundle directory (default: the bundle shipped with svdh-runtime)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write a Grad-CAM overlay PNG and a JSON file per image here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image on stdout.")] = False,
    backend: Annotated[BackendChoice, typer.Option(help="Inference backend.")] = BackendChoice.auto,
    threads: Annotated[int, typer.Option(help="CPU threads for inference (0: library default).", min=0)] = 0,
    include_phi: Annotated[
        bool, typer.Option("--include-phi", help="Put patient name, ID and birth date in the JSON (off by default).")
    ] = False,
) -> None:
    """Score each IMAGE and report the SvdH score, severity class and heatmap."""
    raise typer.Exit(code=_score_all(images, model, out, as_json, backend, threads or None, include_phi))


def _score_all(
    images: list[Path],
    model: Path | None,
    out: Path | None,
    as_json: bool,
    backend_name: str,
    threads: int | None,
    include_phi: bool,
) -> int:
    from .backends import create_backend
    from .bundle import load_bundle
    from .overlay import render_overlay, write_overlay
    from .report import result_record, summary_line
    from .scoring import Scorer

    bundle = load_bundle(model)
    backend = create_backend(backend_name, bundle, threads=threads)
    scorer = Scorer(bundle, backend, include_phi=include_phi)
    err(f"model {bundle.manifest.name} {bundle.manifest.version} ({bundle.model_sha256[:12]}) on {backend.name}")
    used_names: set[str] = set()
    failures = 0
    for path in images:
        started = time.perf_counter()
        result = scorer.score_file(path)
        overlay_path = None
        if result.status == "ok" and out is not None:
            name = _unique_stem(path, used_names)
            overlay_path = out / f"{name}.overlay.png"
            write_overlay(render_overlay(result, bundle.manifest), overlay_path)
        if result.status == "ok":
            result.timings_ms["total"] = round((time.perf_counter() - started) * 1000.0, 2)
        else:
            failures += 1
            err(f"svdh-run: {result.reason}")
        record = result_record(result, bundle, backend.name, str(overlay_path) if overlay_path else None)
        if overlay_path is not None:
            _write_json(out / f"{name}.json", record)
        if as_json:
            print(json.dumps(record), flush=True)
        elif result.status == "ok":
            print(summary_line(result, bundle.manifest), flush=True)
    backend.close()
    return int(ExitCode.INPUT if failures else ExitCode.OK)


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.name.split(".")[0] or "image"
    name, index = stem, 2
    while name in used:
        name, index = f"{stem}-{index}", index + 1
    used.add(name)
    return name


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def main() -> None:
    """Console entry point."""
    run_app(app, "svdh-run")
