"""``svdh-run progression --out``: the cohort CSV and an HTML report with a trajectory per patient and the
cumulative probability plot of changes that trial reports use (inline SVG: no plotting library)."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from pathlib import Path

from .files import atomic_write_text

COHORT_COLUMNS = (
    "patient", "kind", "baseline_date", "followup_date", "baseline_score", "followup_score", "change", "low", "high",
    "years", "per_year", "progressor", "error",
)  # fmt: skip
PLOT_W, PLOT_H, PAD = 560, 300, 44


def cohort_rows(records: list[dict]) -> list[dict]:
    rows = []
    for record in records:
        for pair in record.get("pairs", []):
            change = pair.get("change") or {}
            rows.append(
                {
                    "patient": record["patient"],
                    "kind": pair["kind"],
                    "baseline_date": pair["baseline"]["date"],
                    "followup_date": pair["followup"]["date"],
                    "baseline_score": pair["baseline"]["score"],
                    "followup_score": pair["followup"]["score"],
                    **{k: change.get(k) for k in ("low", "high", "years", "per_year", "progressor")},
                    "change": change.get("total"),
                    "error": pair.get("error"),
                }
            )
        if record.get("error"):
            rows.append({"patient": record["patient"], "error": record["error"]})
    return rows


def write_cohort_csv(path: Path, records: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COHORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(cohort_rows(records))
    atomic_write_text(path, buffer.getvalue())


def cumulative_plot(changes: list[float], sdc: float | None) -> str:
    """Every patient's change, sorted, against its cumulative probability; the SDC as a dashed line."""
    if not changes:
        return "<p>No change to plot.</p>"
    ordered = sorted(changes)
    low, high = min(0.0, ordered[0], -(sdc or 0)), max(1.0, ordered[-1], sdc or 0)
    y = lambda v: PLOT_H - PAD - (v - low) / (high - low) * (PLOT_H - 2 * PAD)  # noqa: E731
    x = lambda p: PAD + p * (PLOT_W - 2 * PAD)  # noqa: E731
    n = len(ordered)
    points = " ".join(f"{x((i + 0.5) / n):.1f},{y(v):.1f}" for i, v in enumerate(ordered))
    parts = [
        f'<svg width="{PLOT_W}" height="{PLOT_H}" role="img" aria-label="cumulative probability plot of changes">',
        f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{PLOT_W - PAD}" y2="{y(0):.1f}" stroke="#999"/>',
        f'<polyline points="{points}" fill="none" stroke="#1f5fa8" stroke-width="2"/>',
        f'<text x="{PLOT_W / 2}" y="{PLOT_H - 8}" text-anchor="middle">cumulative probability (n = {n})</text>',
        f'<text x="12" y="{PLOT_H / 2}" transform="rotate(-90 12 {PLOT_H / 2})" text-anchor="middle">'
        "change (SvdH units)</text>",
        f'<text x="{PAD - 4}" y="{y(high) + 4:.1f}" text-anchor="end">{high:.0f}</text>',
        f'<text x="{PAD - 4}" y="{y(low) + 4:.1f}" text-anchor="end">{low:.0f}</text>',
    ]
    if sdc is not None:
        parts.append(
            f'<line x1="{PAD}" y1="{y(sdc):.1f}" x2="{PLOT_W - PAD}" y2="{y(sdc):.1f}" stroke="#c0392b" '
            f'stroke-dasharray="5,4"/><text x="{PLOT_W - PAD}" y="{y(sdc) - 4:.1f}" text-anchor="end" '
            f'fill="#c0392b">SDC {sdc:.2f}</text>'
        )
    return "".join(parts) + "</svg>"


def trajectory_plot(points: list[tuple[str, float, float | None, float | None]]) -> str:
    """One patient's scores by date ((ISO date, score, low, high) per sitting)."""
    dated = [(dt.date.fromisoformat(d), s, lo, hi) for d, s, lo, hi in points if d]
    if len(dated) < 2:
        return ""
    w, h, pad = 260, 120, 24
    first, last = dated[0][0], dated[-1][0]
    span = max((last - first).days, 1)
    values = [s for _, s, _, _ in dated]
    low, high = min(values) - 2, max(values) + 2
    x = lambda d: pad + (d - first).days / span * (w - 2 * pad)  # noqa: E731
    y = lambda v: h - pad - (v - low) / (high - low) * (h - 2 * pad)  # noqa: E731
    line = " ".join(f"{x(d):.1f},{y(s):.1f}" for d, s, _, _ in dated)
    dots = "".join(f'<circle cx="{x(d):.1f}" cy="{y(s):.1f}" r="3" fill="#1f5fa8"/>' for d, s, _, _ in dated)
    labels = (
        f'<text x="{pad}" y="{h - 6}" font-size="10">{first.isoformat()}</text>'
        f'<text x="{w - pad}" y="{h - 6}" font-size="10" text-anchor="end">{last.isoformat()}</text>'
        f'<text x="2" y="{y(high) + 10:.1f}" font-size="10">{high:.0f}</text>'
        f'<text x="2" y="{y(low):.1f}" font-size="10">{low:.0f}</text>'
    )
    return (
        f'<svg width="{w}" height="{h}" role="img" aria-label="score by visit">'
        f'<polyline points="{line}" fill="none" stroke="#1f5fa8"/>{dots}{labels}</svg>'
    )


def write_html(path: Path, records: list[dict], model: str, sdc: float | None) -> None:
    changes = [
        pair["change"]["total"] for record in records for pair in _headline(record) if pair.get("change") is not None
    ]
    sections = []
    for record in records:
        sittings = record.get("sittings", [])
        rows = "".join(
            f"<tr><td>{html.escape(p['baseline']['date'] or '')}</td><td>{html.escape(p['followup']['date'] or '')}"
            f"</td><td>{_number(p, 'total')}</td><td>{_interval(p)}</td><td>{_number(p, 'per_year')}</td>"
            f"<td>{_flag(p)}</td></tr>"
            for p in record.get("pairs", [])
        )
        error = f"<p class=error>{html.escape(record['error'])}</p>" if record.get("error") else ""
        note = f"<p>{html.escape(record['note'])}</p>" if record.get("note") else ""
        plot = trajectory_plot([(s["date"], s["score"], None, None) for s in sittings])
        table = (
            "<table><tr><th>baseline</th><th>follow-up</th><th>change</th><th>interval</th><th>per year</th>"
            f"<th>progressor</th></tr>{rows}</table>"
            if rows
            else ""
        )
        sections.append(f"<section><h2>{html.escape(record['patient'])}</h2>{error}{note}{plot}{table}</section>")
    sdc_text = f"SDC {sdc:.2f} SvdH units" if sdc is not None else "no SDC (the bundle has no change calibration)"
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>svdh progression</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}.error{{color:#c0392b}}
section{{margin-bottom:1.5em}}</style></head><body>
<h1>Progression</h1><p>Model {html.escape(model)}; {sdc_text}. Patients are named by pseudonym unless the run
was asked for patient data. A change is a progression when it exceeds the SDC.</p>
<h2>Cumulative probability plot</h2><p>Each patient's change from the first to the last visit, sorted.</p>
{cumulative_plot(changes, sdc)}
{"".join(sections)}</body></html>
"""
    atomic_write_text(path, document)


def _headline(record: dict) -> list[dict]:
    """The change a patient contributes to the cumulative plot: baseline to the last visit."""
    pairs = [p for p in record.get("pairs", []) if p.get("change") is not None]
    if len(pairs) <= 1:
        return pairs
    return [p for p in pairs if p["kind"] == "baseline_to_last"] or pairs[-1:]


def _number(pair: dict, key: str) -> str:
    value = (pair.get("change") or {}).get(key)
    return "" if value is None else f"{value:+.2f}"


def _interval(pair: dict) -> str:
    change = pair.get("change") or {}
    if change.get("low") is None:
        return html.escape(pair.get("error") or "")
    return f"{change['low']:+.2f} to {change['high']:+.2f} ({change['level']:.0%})"


def _flag(pair: dict) -> str:
    value = (pair.get("change") or {}).get("progressor")
    return "" if value is None else ("yes" if value else "no")
