"""``svdh-run``: score hand radiographs from the command line.

Exit codes: 0 every input scored; 2 at least one input could not be scored
(the others still are); 3 the model bundle is missing, damaged or unusable;
4 (``svdh-run status``) the PACS node is not running; 1 anything else.

``svdh-run serve``, ``svdh-run status`` and ``svdh-run resend`` run, query and
instruct the PACS node (:mod:`svdh_runtime.pacs`); ``svdh-run serve-local``
keeps a warm process for ``svdh-run --warm`` (:mod:`svdh_runtime.warm_service`);
to score a file named ``serve``, write ``./serve``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .backends.choice import BackendChoice
from .cli_support import LogLevelOption, err, run_app
from .errors import ExitCode, InputError, MissingDependencyError, OutputError
from .logs import LogLevel
from .naming import InputNames

if TYPE_CHECKING:
    import PIL.Image

    from .backends import Backend
    from .batch import ResultsLog
    from .bundle import Bundle
    from .discovery import Skipped
    from .scoring import ScoreResult

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Score hand radiographs (van der Heijde modified Sharp, hands and wrists, 0-280).",
)


class OverlayFormat(str, Enum):
    """The overlay picture's format: JPEG (``NAME.overlay.jpg``, quality 90: small and quick to write) or PNG
    (``NAME.overlay.png``, lossless)."""

    png = "png"
    jpeg = "jpeg"


@app.command(
    epilog="Changes between visits: svdh-run progression. The PACS node: svdh-run serve | status | resend. "
    "A warm process for --warm: svdh-run serve-local (each with --help)."
)
def run(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="DICOM, PNG, JPEG, TIFF or WebP files, DICOMDIRs, or folders to search recursively.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Optional[Path],
        typer.Option("--model", "-m", help="Bundle directory (default: the bundle shipped with svdh-runtime)."),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Results folder: an overlay picture and a JSON per image, results.jsonl, summary.csv, report.html. "
            "A rerun skips inputs already in results.jsonl.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image on stdout.")] = False,
    rescore: Annotated[bool, typer.Option("--rescore", help="Score inputs again that --out already holds.")] = False,
    dicom_results: Annotated[
        bool,
        typer.Option(
            "--dicom-results",
            help="With --out: also write a DICOM SR (TID 1500) and a Secondary Capture overlay per DICOM input.",
        ),
    ] = False,
    backend: Annotated[
        BackendChoice,
        typer.Option(
            help="auto: a TensorRT engine built for this GPU if the bundle has one, else ONNX Runtime "
            "(CUDA when onnxruntime-gpu is installed, else CPU)."
        ),
    ] = BackendChoice.auto,
    build_engine: Annotated[
        bool,
        typer.Option(
            "--build-engine",
            help="When no engine matches this GPU and TensorRT, build one first (runs `svdh-export build-engine`; "
            "needs svdh-exporter and TensorRT).",
        ),
    ] = False,
    threads: Annotated[int, typer.Option(help="CPU threads for inference (0: library default).", min=0)] = 0,
    include_phi: Annotated[
        bool, typer.Option("--include-phi", help="Put patient name, ID and birth date in the JSON (off by default).")
    ] = False,
    no_paths: Annotated[
        bool,
        typer.Option(
            "--no-paths",
            help="Name inputs by a hash of their path (input-1a2b3c...) in every output, message and file name, "
            "for file names that hold patient data (DICOM records keep their SOP Instance UID).",
        ),
    ] = False,
    interval_level: Annotated[
        float,
        typer.Option(
            "--interval-level",
            min=0.5,
            max=0.99,
            help="Level of the score's prediction interval, for bundles calibrated with intervals.",
        ),
    ] = 0.9,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per model call. 8 suits GPUs and CPUs alike (on a 2-core CPU: 42 ms per image "
            "against 50 ms one at a time).",
        ),
    ] = 8,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            min=1,
            help="Threads that read and prepare images ahead of the model (default: one per core).",
            show_default=False,
        ),
    ] = None,
    worker_processes: Annotated[
        bool,
        typer.Option(
            "--worker-processes",
            help="Prepare in processes instead of threads (for compressed DICOMs whose decoder holds the GIL).",
        ),
    ] = False,
    overlay_format: Annotated[
        OverlayFormat,
        typer.Option("--overlay-format", help="With --out: the overlay's format, JPEG (quality 90) or PNG (lossless)."),
    ] = OverlayFormat.jpeg,
    overlay_full_size: Annotated[
        bool,
        typer.Option(
            "--overlay-full-size",
            help="With --out: overlays at the radiograph's size (default: longest side 1024 pixels).",
        ),
    ] = False,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm",
            help="Run this command in the warm process of `svdh-run serve-local` (bundle, backend and code "
            "already loaded: a quicker answer); in this process when none is running.",
        ),
    ] = False,
    log_level: LogLevelOption = LogLevel.warning,
) -> None:
    """Score each IMAGE and report the SvdH score, severity class and heatmap."""
    from .logs import configure
    from .naming import InputNames

    names = InputNames(hide_paths=no_paths)
    configure(log_level.value, include_phi, names.log_filter())
    if dicom_results and out is None:
        raise typer.BadParameter("needs --out", param_hint="--dicom-results")
    if build_engine and backend == BackendChoice.onnxruntime:
        raise typer.BadParameter("cannot be used with --backend onnxruntime", param_hint="--build-engine")
    options = RunOptions(
        out, as_json, rescore, backend.value, threads or None, include_phi, dicom_results, build_engine, names,
        interval_level, batch_size, workers, worker_processes, overlay_format.value, overlay_full_size,
    )  # fmt: skip
    raise typer.Exit(code=_score_all(images, model, options))


@dataclass(frozen=True)
class RunOptions:
    out: Path | None
    as_json: bool
    rescore: bool
    backend: str
    threads: int | None
    include_phi: bool
    dicom_results: bool = False
    build_engine: bool = False
    names: InputNames = field(default_factory=InputNames)  # how inputs are named in the output (--no-paths)
    interval_level: float = 0.9  # level of the score's prediction interval (calibrated bundles)
    batch_size: int = 8  # images per backend call
    workers: int | None = None  # preparation workers (None: one per core)
    worker_processes: bool = False  # prepare in processes, not threads
    overlay_format: str = "jpeg"
    overlay_full_size: bool = False  # overlays at the source's size instead of DISPLAY_LONG_SIDE


def _score_all(images: list[Path], model: Path | None, options: RunOptions) -> int:
    from . import warm
    from .batch import RESULTS_NAME, Progress, ResultsLog, claim_output_folder, write_summary
    from .discovery import discover
    from .overlay import DISPLAY_LONG_SIDE
    from .pipeline import PreparedFile, PreparedStream, Preparer, default_workers, run_pipeline
    from .scoring import Scorer

    out = options.out
    if out is not None:
        _refuse_out_holding_inputs(out, images)
    claim = claim_output_folder(out) if out is not None else None  # before any work: a bad --out costs nothing
    bundle = _bundle(model)
    found = discover(images, exclude=out)
    names = options.names
    if found.out_inside_inputs:
        err(f"note: --out {names.source(out)} lies inside an input folder; its files are not read as inputs")
    for folder in found.results_folders:
        err(f"note: {names.source(folder)} is the results folder of an earlier svdh-run; not read")
    for folder in found.empty_folders:
        err(f"svdh-run: {names.source(folder)}: holds no images to score")
    if found.repeats:
        err(f"note: {found.repeats} input(s) were the same file as another (named twice, or a link); scored once")
    paths = found.images
    log = ResultsLog(out / RESULTS_NAME) if out is not None else None
    if log is not None:
        done = set() if options.rescore else {names.key(p) for p in paths if log.is_scored(names.key(p))}
        log.forget(names.key(p) for p in paths if names.key(p) not in done)  # refused earlier: try again
        log.forget(names.key(s.path) for s in [*found.skipped, *found.unreadable])  # recorded again below
        if done:
            err(f"{len(done)} input(s) already scored in {log.path}; skipped (--rescore scores them again)")
        paths = [p for p in paths if names.key(p) not in done]
    _report_skipped(found.skipped, options, log)
    failures = _report_unreadable(found.unreadable, options, log)
    used_names = {r["name"] for r in log.records.values() if r.get("name")} if log is not None else set()
    scorer = Scorer(bundle, None, include_phi=options.include_phi, interval_level=options.interval_level)
    workers = default_workers(len(paths)) if options.workers is None else options.workers
    preparer = Preparer(
        bundle.manifest.preprocessing,
        options.include_phi,
        None if out is None else (0 if options.overlay_full_size else DISPLAY_LONG_SIDE),
    )
    # Workers fork before the backend opens (no inference threads yet); the first files are read meanwhile.
    ahead = 2 * workers + 2 * options.batch_size
    processes = options.worker_processes
    if processes and warm.active():  # forking a process that runs inference threads is not safe
        err("note: the warm process prepares images in threads (--worker-processes is not used there)")
        processes = False
    stream = PreparedStream(paths, preparer, workers, ahead, processes=processes)
    try:
        scorer.backend = backend = _backend(bundle, model, options)
        progress = Progress(len(paths))

        def write(item: PreparedFile) -> None:
            nonlocal failures
            with _writing_results(out):
                failures += _report(item.result, item.path, item.started, bundle, backend.name, options, log,
                                    used_names)  # fmt: skip
            progress.step(item.result.status == "ok")

        run_pipeline(stream, scorer, options.batch_size, write)
    finally:
        stream.close()
    progress.close()
    if not warm.active():
        backend.close()
    if found.skipped:
        err(f"{len(found.skipped)} file(s) skipped, not images to score: {found.skipped_summary()}")
    if log is not None:
        with _writing_results(out):
            write_summary(log.records.values(), out)
    if claim is not None:
        claim.close()
    return int(ExitCode.INPUT if failures or found.empty_folders else ExitCode.OK)


@contextmanager
def _writing_results(out: Path | None) -> Iterator[None]:
    """A results folder that cannot take more (a full disk) stops the run in one line: every record written
    before is whole (atomic writes), so a rerun with the same --out goes on from there."""
    try:
        yield
    except OSError as exc:
        where = f"in {out}" if out is not None else "to stdout"
        raise OutputError(
            f"cannot write results {where} ({_system_reason(exc)}); the images finished before "
            "are kept, and a rerun with the same --out goes on from there"
        ) from None


def _system_reason(exc: BaseException) -> str:
    """The operating system's words for an error (``No space left on device``), also when a library wrapped
    it (pydicom re-raises write errors naming the element); else the exception's type."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _refuse_out_holding_inputs(out: Path, images: list[Path]) -> None:
    """Results written among the inputs would be read as inputs by the next run: refuse before any work."""
    import os

    from .errors import InputError

    results = os.path.realpath(out)
    for item in images:
        if Path(item).is_dir():
            folder = os.path.realpath(item)
            if folder == results or folder.startswith(results + os.sep):
                raise InputError(f"--out {out} holds the input folder {item}: choose a results folder outside it")


def _report_unreadable(unreadable: list[Skipped], options: RunOptions, log: ResultsLog | None) -> int:
    """An error record (and one line) per folder that could not be listed; how many."""
    names = options.names
    for folder in unreadable:
        source = names.source(folder.path)
        reason = names.scrub(folder.reason)
        err(f"svdh-run: {reason}")
        record = {"source": source, "status": "error", "reason": reason}
        if log is not None:
            log.append({**record, "source_path": names.key(folder.path), "name": None})
        if options.as_json:
            print(json.dumps(record), flush=True)
    return len(unreadable)


def _report_skipped(skipped: list[Skipped], options: RunOptions, log: ResultsLog | None) -> None:
    """One record per file a folder scan skipped (status "skipped", the reason): in the log and with --json."""
    names = options.names
    for skip in skipped:
        record = {"source": names.source(skip.path), "status": "skipped", "reason": names.scrub(skip.reason)}
        if log is not None:
            log.append({**record, "source_path": names.key(skip.path), "name": None})
        if options.as_json:
            print(json.dumps(record), flush=True)


def _bundle(model: Path | None) -> Bundle:
    """The bundle (the default one when ``model`` is None); kept between commands in the warm process."""
    from . import warm
    from .bundle import load_bundle

    def load() -> Bundle:
        return load_bundle(model, verify_now=False)  # each model file is checked when the backend reads it

    return warm.bundle(model, load) if warm.active() else load()


def _backend(bundle: Bundle, model: Path | None, options: RunOptions) -> Backend:
    """The backend for this command; one line says which. Kept between commands in the warm process."""
    from . import warm

    if warm.active():
        choice = (options.backend, options.threads, options.build_engine)
        opened, line = warm.backend(bundle, choice, lambda: _open_backend(bundle, model, options))
    else:
        opened, line = _open_backend(bundle, model, options)
    err(line)
    return opened


def _open_backend(bundle: Bundle, model: Path | None, options: RunOptions) -> tuple[Backend, str]:
    """The backend asked for (building a TensorRT engine first with --build-engine), and the line that says
    which and why."""
    from .backends import select_backend
    from .bundle import load_bundle

    selection = select_backend(options.backend, bundle, threads=options.threads)
    if options.build_engine and selection.backend.name != "tensorrt":
        from .engine_builds import build_engine_for

        err(f"no usable TensorRT engine ({selection.reason}); building one")
        selection.backend.close()
        build_engine_for(bundle.path)
        selection = select_backend("tensorrt", load_bundle(model), threads=options.threads)
    line = (
        f"model {bundle.manifest.name} {bundle.manifest.version} ({bundle.model_sha256[:12]}) "
        f"on {selection.backend.name} ({selection.reason})"
    )
    return selection.backend, line


def _report(
    result: ScoreResult,
    path: Path,
    started: float,
    bundle: Bundle,
    backend_name: str,
    options: RunOptions,
    log: ResultsLog | None,
    used_names: set[str],
) -> int:
    """Write and print one result; returns 1 for a refused input, else 0."""
    from .overlay import DISPLAY_LONG_SIDE, OVERLAY_SUFFIXES, render_overlay, write_overlay
    from .report import result_record, summary_line

    out, name, overlay_path, dicom_files, dropped, results_error = options.out, None, None, [], (), None
    names = options.names
    result.source, result.reason = names.source(path), names.scrub(result.reason)
    if result.status == "ok" and out is not None:
        name = _unique_stem(names.stem(path), used_names)
        overlay_path = out / f"{name}.overlay.{OVERLAY_SUFFIXES[options.overlay_format]}"
        picture = render_overlay(result, bundle.manifest, 0 if options.overlay_full_size else DISPLAY_LONG_SIDE)
        write_overlay(picture, overlay_path)
        if options.dicom_results and result.meta.format == "dicom":
            try:
                dicom_files, dropped = _write_dicom_results(path, result, picture, bundle, out / name)
            except (MissingDependencyError, OSError):
                raise  # highdicom missing, or the results folder full: the whole run stops (_writing_results)
            except InputError as exc:  # ours: says which attribute, never its value
                results_error = f"DICOM results not made: {exc}"
                err(f"svdh-run: {result.source}: scored, but {results_error}")
            except Exception as exc:  # the header is the problem; its message may quote patient data: not shown
                results_error = f"DICOM results could not be made from this image's header ({type(exc).__name__})"
                err(f"svdh-run: {result.source}: scored, but {results_error}")
    if result.status == "ok":
        result.timings_ms["total"] = round((time.perf_counter() - started) * 1000.0, 2)
    else:
        err(f"svdh-run: {result.reason}")
    record = result_record(result, bundle, backend_name, str(overlay_path) if overlay_path else None)
    if dicom_files:
        record["dicom_results"] = [str(f) for f in dicom_files]
    if dropped:
        record["dicom_results_dropped"] = list(dropped)  # attributes with invalid values, left empty
        err(f"svdh-run: {result.source}: invalid {', '.join(dropped)} left empty in its DICOM results")
    if results_error:
        record["dicom_results_error"] = results_error
    if name is not None:
        _write_json(out / f"{name}.json", record)
    if log is not None:
        log.append({**record, "source_path": names.key(path), "name": name})
    if options.as_json:
        print(json.dumps(record), flush=True)
    elif result.status == "ok":
        print(summary_line(result, bundle.manifest), flush=True)
    return 0 if result.status == "ok" and results_error is None else 1


def _write_dicom_results(
    path: Path, result: ScoreResult, picture: PIL.Image.Image, bundle: Bundle, stem: Path
) -> tuple[list[Path], tuple[str, ...]]:
    """The SR and the Secondary Capture of one scored DICOM, next to its overlay; and the source attributes
    left empty in them (invalid values)."""
    import numpy as np

    from .dicom_results import write_dicom_results

    files = (stem.with_name(stem.name + ".sr.dcm"), stem.with_name(stem.name + ".sc.dcm"))
    dropped = write_dicom_results(
        path, result.prediction, np.asarray(picture), bundle.manifest, bundle.model_sha256, files
    )
    return list(files), dropped


def _unique_stem(stem: str, used: set[str]) -> str:
    name, index = stem, 2
    while name in used:
        name, index = f"{stem}-{index}", index + 1
    used.add(name)
    return name


def _write_json(path: Path, record: dict) -> None:
    from .files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def main() -> None:
    """Console entry point."""
    from .fast_start import import_pydicom_quickly

    import_pydicom_quickly()
    if sys.argv[1:2] in (["serve"], ["status"], ["resend"]):
        from .pacs.cli import app as node_app

        run_app(node_app, "svdh-run")
    if sys.argv[1:2] == ["serve-local"]:
        from .warm_service import app as warm_app

        del sys.argv[1]
        run_app(warm_app, "svdh-run serve-local")
    if sys.argv[1:2] == ["progression"]:
        from .progression_cli import app as progression_app

        del sys.argv[1]
        run_app(progression_app, "svdh-run progression")
    run_app(app, "svdh-run")
