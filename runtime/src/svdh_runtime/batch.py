"""Batch runs: keep one result per input across interrupted runs, summarise (inputs: :mod:`.discovery`).

``OUT/results.jsonl`` is append-only, one JSON record per input, flushed and
fsynced after each record; a run killed mid-write leaves at most a torn last
line, which the next run drops before it goes on. A rerun skips every input
already scored in the log (a refused one is tried again and its record
replaced), so each input ends with exactly one record.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .areas import AREAS, HANDS
from .files import atomic_write_text

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.csv"
REPORT_NAME = "report.html"


LOCK_NAME = ".svdh-run.lock"


def claim_output_folder(out: Path) -> io.TextIOWrapper:
    """Make sure ``--out`` is a folder this run can write, and hold it: a second run on the same folder is
    refused until this one ends (the lock goes with the returned handle, also when the process dies)."""
    import tempfile

    from .errors import InputError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=out, prefix=".svdh-write-check.")
        os.close(descriptor)
        os.unlink(probe)
        handle = (out / LOCK_NAME).open("a+", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {out}: cannot be written to ({exc.strerror or exc})") from None
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"--out {out}: another svdh-run is writing there; wait for it to finish") from None
    return handle


class ResultsLog:
    """The append-only JSON-lines log of a batch output folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # torn last line from an interrupted run
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "source_path" in record:
                self.records[record["source_path"]] = record

    def is_scored(self, key: str) -> bool:
        """True when the log holds a successful result for this input."""
        return self.records.get(key, {}).get("status") == "ok"

    def forget(self, keys: Iterable[str]) -> None:
        """Drop records (before rescoring them), rewriting the log atomically."""
        keys = set(keys) & set(self.records)
        if not keys:
            return
        for key in keys:
            del self.records[key]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records.values()))

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["source_path"]] = record


def write_summary(records: Iterable[dict[str, Any]], out: Path) -> None:
    """``summary.csv`` (one row per input) and ``report.html`` (with overlay thumbnails)."""
    records = sorted(records, key=lambda r: r["source"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["source", "status", "score", "severity", "reason", "overlay", "sop_instance_uid", "score_low", "score_high"]
    )
    for r in records:
        interval = r.get("score_interval", {})
        writer.writerow(
            [
                r["source"],
                r["status"],
                r.get("score", ""),
                r.get("severity", {}).get("class", ""),
                r.get("reason", "") or "",
                r.get("overlay", ""),
                r.get("sop_instance_uid", ""),
                interval.get("low", ""),
                interval.get("high", ""),
            ]
        )
    atomic_write_text(out / SUMMARY_NAME, buffer.getvalue())
    rows = []
    for r in records:
        picture = ""
        if r.get("overlay"):
            link = html.escape(os.path.relpath(r["overlay"], out))
            picture = f'<a href="{link}"><img src="{link}" width="256" loading="lazy" alt="overlay"></a>'
        score = f"{r['score']:.1f}" if "score" in r else ""
        if "score_interval" in r:
            interval = r["score_interval"]
            score += f"<br><small>{interval['low']:.1f}–{interval['high']:.1f} ({interval['level']:.0%})</small>"
        rows.append(
            f"<tr><td>{html.escape(r['source'])}</td><td>{html.escape(r['status'])}</td><td>{score}</td>"
            f"<td>{html.escape(r.get('severity', {}).get('class', ''))}</td>"
            f"<td>{html.escape(r.get('reason', '') or '')}{joint_table_html(r)}</td><td>{picture}</td></tr>"
        )
    scored = sum(r["status"] == "ok" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    skipped_note = f" {skipped} file(s) skipped: not images (the reason is in each row)." if skipped else ""
    atomic_write_text(
        out / REPORT_NAME,
        "<!doctype html><meta charset='utf-8'><title>svdh results</title>"
        "<style>body{font-family:sans-serif}td{padding:4px 8px;vertical-align:top}</style>"
        f"<h1>svdh results</h1><p>{scored} of {len(records) - skipped} images scored.{skipped_note} Scores are van der Heijde modified "
        "Sharp totals (hands and wrists, 0-280) predicted by the model named in each JSON record.</p>"
        "<table><tr><th>source</th><th>status</th><th>score</th><th>severity</th><th>reason</th><th>heatmap</th></tr>"
        + "".join(rows)
        + "</table>\n",
    )


def joint_table_html(record: dict[str, Any]) -> str:
    """The per-joint table of a record with per-area grades: each area's grade per hand (a dash for a hand
    the image does not show), then the subtotals; empty for other records."""
    areas = record.get("areas")
    if not areas:
        return ""
    rows = []
    for area in AREAS:
        cells = "".join(
            f"<td>{'–' if areas.get(area.column(hand)) is None else format(areas[area.column(hand)], '.1f')}</td>"
            for hand in HANDS
        )
        kind = "erosion" if area.kind == "E" else "narrowing"
        rows.append(f"<tr><td>{html.escape(area.key)}</td><td>{kind}</td>{cells}</tr>")
    subtotals = record.get("subtotals", {})
    hands = "".join(
        f"<td>{'–' if subtotals.get(hand) is None else format(subtotals[hand]['total'], '.1f')}</td>" for hand in HANDS
    )
    rows.append(f"<tr><th colspan=2>hand total</th>{hands}</tr>")
    summary = (
        f"per joint: erosion {subtotals.get('erosion', 0):.1f}, narrowing {subtotals.get('narrowing', 0):.1f}, "
        f"sum of areas {subtotals.get('areas_sum', 0):.1f}"
    )
    header = "<tr><th>area</th><th>kind</th>" + "".join(f"<th>{hand}</th>" for hand in HANDS) + "</tr>"
    return f"<details><summary>{summary}</summary><table>{header}{''.join(rows)}</table></details>"


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.errors = total, 0, 0
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty() and total > 1

    def step(self, ok: bool) -> None:
        self.done += 1
        self.errors += not ok
        if self.enabled:
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            eta = (self.total - self.done) / rate
            print(
                f"\rscored {self.done}/{self.total} ({self.errors} errors), {rate:.1f}/s, ETA {eta:.0f} s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)
