"""``svdh-run progression``: the change between a patient's visits, from DICOM files or folders.

Exit codes as ``svdh-run``: 0 every patient's changes measured; 2 some films or
patients could not be paired, ordered or scored (the others still are); 3 the
bundle is unusable; 1 anything else.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .backends.choice import BackendChoice
from .cli_support import LogLevelOption, err
from .errors import ExitCode
from .logs import LogLevel
from .naming import InputNames


class ReadingOrder(str, enum.Enum):
    known = "known"
    blinded = "blinded"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Changes between visits.")
RECORDS_NAME, COHORT_NAME, REPORT_NAME = "progression.jsonl", "cohort.csv", "progression.html"


@app.command()
def progression(
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(help="DICOM files or folders: grouped by PatientID, ordered by date.", show_default=False),
    ] = None,
    baseline: Annotated[
        Optional[list[Path]],
        typer.Option(help="The earlier film(s) of one pair (twice for one file per hand); PNG/JPEG too."),
    ] = None,
    followup: Annotated[Optional[list[Path]], typer.Option(help="The later film(s) of the pair.")] = None,
    model: Annotated[
        Optional[Path], typer.Option("--model", "-m", help="Bundle directory (default: the shipped one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per patient on stdout.")] = False,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help=f"Write {RECORDS_NAME}, {COHORT_NAME} and {REPORT_NAME} here."),
    ] = None,
    interval_level: Annotated[
        Optional[float],
        typer.Option(min=0.5, max=0.99, help="Level of the change's interval (default: the bundle's)."),
    ] = None,
    include_phi: Annotated[
        bool, typer.Option("--include-phi", help="Name patients by their PatientID (default: a keyed pseudonym).")
    ] = False,
    pseudonym_key: Annotated[
        Optional[Path],
        typer.Option(
            help="File of the key that pseudonymises PatientIDs (created on first use; default: pseudonym.key "
            "in $XDG_STATE_HOME/svdh). The same key gives the same pseudonyms in every run."
        ),
    ] = None,
    no_paths: Annotated[
        bool,
        typer.Option("--no-paths", help="Name films by a hash of their path (input-1a2b...), as svdh-run does."),
    ] = False,
    order: Annotated[
        ReadingOrder,
        typer.Option(
            help="known: the films side by side in date order (the bundle's paired graph, as trial readers read "
            "in known order); blinded: each film scored alone, the change the difference of the scores."
        ),
    ] = ReadingOrder.known,
    backend: Annotated[BackendChoice, typer.Option(help="As for svdh-run.")] = BackendChoice.auto,
    threads: Annotated[int, typer.Option(help="CPU threads for inference (0: library default).", min=0)] = 0,
    log_level: LogLevelOption = LogLevel.warning,
) -> None:
    """Measure the change of the SvdH total between a patient's visits: for each pair of consecutive visits,
    and from the baseline to the last, the change with its interval, per year, per area, and whether it is a
    progression (larger than the bundle's smallest detectable change)."""
    from .logs import configure

    names = InputNames(hide_paths=no_paths)
    configure(log_level.value, include_phi, names.log_filter())
    if (baseline or followup) and inputs:
        raise typer.BadParameter("give FILES|FOLDERS or --baseline/--followup, not both", param_hint="--baseline")
    if bool(baseline) != bool(followup):
        raise typer.BadParameter("--baseline and --followup go together", param_hint="--followup")
    if not (inputs or baseline):
        raise typer.BadParameter("give DICOM files or folders, or --baseline A --followup B", param_hint="FILES")
    raise typer.Exit(code=_measure(inputs or [], baseline or [], followup or [], model, as_json, out,
                                   interval_level, include_phi, pseudonym_key, backend.value, threads or None,
                                   names, order))  # fmt: skip


def _measure(
    inputs: list[Path], baseline: list[Path], followup: list[Path], model: Path | None, as_json: bool,
    out: Path | None, level: float | None, include_phi: bool, key_path: Path | None, backend_name: str,
    threads: int | None, names: InputNames, order: ReadingOrder,
) -> int:  # fmt: skip
    from .backends import select_backend
    from .bundle import load_bundle
    from .progression import ScoredSitting, change_record, default_key_path, load_pseudonym_key, pseudonym
    from .scoring import Scorer
    from .visits import PatientVisits, Sitting, group_visits, read_film, visit_pairs

    claim = None
    if out is not None:
        from .batch import claim_output_folder

        claim = claim_output_folder(out)
    key = None if include_phi else load_pseudonym_key(key_path or default_key_path())
    name_of = (lambda pid: pid) if include_phi else (lambda pid: pseudonym(pid, key))
    bundle = load_bundle(model)
    problems = 0
    if baseline:
        films = [read_film(p) for p in [*baseline, *followup]]
        ids = {f.patient_id for f in films if f.patient_id is not None}
        if len(ids) > 1:
            err("svdh-run: error: --baseline and --followup are films of different patients (PatientID differs)")
            return int(ExitCode.INPUT)
        patient = PatientVisits(ids.pop() if ids else "", [Sitting(films[: len(baseline)]),
                                                            Sitting(films[len(baseline) :])])  # fmt: skip
        groups, explicit = [patient], True
    else:
        from .discovery import discover

        found = discover(inputs, exclude=out)
        for skip in found.unreadable:
            err(f"svdh-run: {names.source(skip.path)}: {names.scrub(skip.reason)}")
        problems += len(found.unreadable)
        groups, orphans = group_visits([read_film(p) for p in found.images], name_of)
        for path, reason in orphans:
            err(f"svdh-run: {names.source(path)}: {reason}")
        problems += len(orphans)
        explicit = False
    selection = select_backend(backend_name, bundle, threads=threads)
    err(f"model {bundle.manifest.name} {bundle.manifest.version} on {selection.backend.name} ({selection.reason})")
    scorer = Scorer(bundle, selection.backend)
    graph = None
    if order == ReadingOrder.blinded:
        err("note: --order blinded: every film scored alone; changes are differences of scores")
    elif bundle.manifest.outputs.paired is None:
        err("note: the bundle has no paired graph; changes are differences of scores (films read apart)")
    else:
        from .paired import PairedGraph

        graph = PairedGraph(bundle, threads)
    scored: dict[Path, object] = {}

    def score(sitting: Sitting) -> ScoredSitting:
        results = []
        for film in sitting.films:
            if film.path not in scored:
                scored[film.path] = scorer.score_file(film.path)
            results.append(scored[film.path])
        return ScoredSitting(sitting, results, [names.source(p) for p in sitting.paths])

    records = []
    for group in sorted(groups, key=lambda g: name_of(g.patient_id) if g.patient_id else ""):
        label = name_of(group.patient_id) if group.patient_id else "unidentified"
        record: dict = {"patient": label}
        if group.problem is not None:
            record["error"] = names.scrub(group.problem)
            problems += 1
        else:
            sittings = [score(s) for s in group.sittings]
            record["sittings"] = [s.summary() for s in sittings]
            pairs = [(sittings[0], sittings[1], "explicit")] if explicit else [
                (sittings[group.sittings.index(a)], sittings[group.sittings.index(b)], kind)
                for a, b, kind in visit_pairs(group)
            ]  # fmt: skip
            record["pairs"] = [
                change_record(bundle.manifest, a, b, kind, level, graph,
                              None if out is None else (out, _overlay_stem(label, a, b)))
                for a, b, kind in pairs
            ]  # fmt: skip
            for pair in record["pairs"]:
                if pair.get("error"):
                    pair["error"] = names.scrub(pair["error"])
            problems += sum(1 for p in record["pairs"] if p.get("error"))
            if len(sittings) == 1:
                record["note"] = "one visit only: no change to report"
        records.append(record)
        _print(record, as_json)
    selection.backend.close()
    if graph is not None:
        graph.close()
    if out is not None:
        _write_out(out, records, bundle, "paired" if graph is not None else "difference")
        claim.close()
    return int(ExitCode.INPUT if problems else ExitCode.OK)


def _overlay_stem(label: str, earlier, later) -> str:  # noqa: ANN001 - ScoredSitting
    """``<patient>_<baseline date>_<follow-up date>``: the start of a pair's overlay file names."""
    dates = [s.sitting.date.isoformat() if s.sitting.date else "undated" for s in (earlier, later)]
    return f"{label}_{dates[0]}_{dates[1]}"


def _print(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
        return
    if record.get("error"):
        err(f"svdh-run: {record['error']}")
        return
    if record.get("note"):
        print(f"{record['patient']}: {record['note']}", flush=True)
    for pair in record.get("pairs", []):
        dates = f"{pair['baseline']['date'] or 'baseline'} -> {pair['followup']['date'] or 'follow-up'}"
        head = f"{record['patient']}: {dates} ({pair['route']})"
        change = pair.get("change")
        if change is None:
            err(f"svdh-run: {head}: {pair['error']}")
            continue
        parts = [f"change {change['total']:+.1f}"]
        if change.get("low") is not None:
            parts.append(f"({change['level']:.0%}: {change['low']:+.1f} to {change['high']:+.1f})")
        if change.get("per_year") is not None:
            parts.append(f"{change['per_year']:+.1f}/year")
        if change.get("progressor") is not None:
            parts.append(
                f"{'progression' if change['progressor'] else 'no progression'} (threshold {change['progression_threshold']:.2f})"
            )
        print(f"{head}: {' '.join(parts)}", flush=True)


def _write_out(out: Path, records: list[dict], bundle, route: str) -> None:  # noqa: ANN001
    from .files import atomic_write_text
    from .progression_report import write_cohort_csv, write_html

    atomic_write_text(out / RECORDS_NAME, "".join(json.dumps(r) + "\n" for r in records))
    write_cohort_csv(out / COHORT_NAME, records)
    calibration = bundle.manifest.outputs.change_for(route)
    write_html(out / REPORT_NAME, records, f"{bundle.manifest.name} {bundle.manifest.version}",
               None if calibration is None else calibration.sdc)  # fmt: skip
