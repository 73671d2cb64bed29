"""Changes between a patient's visits, as ``svdh-run progression`` reports them (the difference route).

Each sitting's total is the sum of its films' scores (one film of both hands,
or one per hand); a change is the later sitting's total minus the earlier's,
only when both show the same hands. Its interval, its yearly rate and the
progressor flag come from :mod:`svdh_runtime.change`; per-area and subtotal
changes from the joint head, where the bundle has one. Every film is scored on
its own, so the order the films are read in cannot move the result.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .areas import HANDS
from .change import measure_change
from .errors import OutputError
from .manifest import Manifest
from .paired import PairedGraph
from .scoring import ScoreResult
from .visits import Film, Sitting

PSEUDONYM_PREFIX = "P-"
KEY_BYTES = 32


@dataclass
class ScoredSitting:
    """A sitting and its films' results."""

    sitting: Sitting
    results: list[ScoreResult]
    sources: list[str]  # how the output names each film (path, or its label with --no-paths)

    @property
    def problem(self) -> str | None:
        for source, result in zip(self.sources, self.results):
            if result.status != "ok":
                return f"{source}: {result.reason or result.status}"
        return None

    @property
    def score(self) -> float:
        return float(sum(r.prediction.score for r in self.results))

    @property
    def hands(self) -> tuple[str, ...]:
        """The hands the sitting shows (see :func:`film_hands`)."""
        shown = {hand for film, result in zip(self.sitting.films, self.results) for hand in film_hands(film, result)}
        return tuple(h for h in HANDS if h in shown)

    def grades(self) -> dict[str, float] | None:
        """Per-area grades of the shown hands (None without a joint head)."""
        merged: dict[str, float] = {}
        for result in self.results:
            if result.prediction.areas is None:
                return None
            merged.update(result.prediction.areas.graded)
        return merged

    def summary(self) -> dict:
        return {
            "sources": self.sources,
            "date": None if self.sitting.date is None else self.sitting.date.isoformat(),
            "score": round(self.score, 3),
            "hands": list(self.hands),
        }


def film_hands(film: Film, result: ScoreResult) -> tuple[str, ...]:
    """The hands a scored film shows: the joint head's reading, else DICOM laterality, else both."""
    areas = result.prediction.areas
    if areas is not None:
        return tuple(areas.shown)
    if film.laterality in ("L", "R"):
        return (f"{film.laterality}H",)
    return HANDS


def film_pairs(earlier: list[ScoreResult], later: list[ScoreResult]) -> list[tuple[ScoreResult, ScoreResult]] | None:
    """The films of two sittings matched by the hands each shows (both on one film, or one per file); None
    when the two sittings are not laid out alike."""

    def by_hands(results: list[ScoreResult]) -> dict[tuple[str, ...], ScoreResult] | None:
        films = {}
        for result in results:
            if result.prediction is None or result.prediction.areas is None:
                return None
            films[result.prediction.areas.shown] = result
        return films if len(films) == len(results) else None

    before, after = by_hands(earlier), by_hands(later)
    if before is None or after is None or set(before) != set(after):
        return None
    return [(before[hands], after[hands]) for hands in after]


def paired_change(
    graph: PairedGraph, pairs: list[tuple[ScoreResult, ScoreResult]], cams: list | None = None
) -> dict[str, float]:
    """The paired graph's change of every area shown, over matched films; ``cams`` collects each follow-up
    film's result with its change CAM."""
    areas: dict[str, float] = {}
    for before, after in pairs:
        reading = graph.change(before.prepared.canvas, after.prepared.canvas)
        areas.update({c: v for c, v in reading.areas.items() if v is not None})
        if cams is not None:
            cams.append((after, reading.cam))
    return areas


def write_change_overlays(out: Path, stem: str, cams: list, manifest: Manifest, total: float) -> list[str]:
    """Each follow-up film with the change's CAM over it, as ``<stem>[-<n>].change.png``; returns the names."""
    from .overlay import compose_overlay, display_levels, write_overlay

    names = []
    for number, (result, cam) in enumerate(cams, start=1):
        name = f"{stem}{'' if len(cams) == 1 else f'-{number}'}.change.png"
        picture = compose_overlay(
            display_levels(result.image.pixels, manifest.preprocessing), cam, manifest.preprocessing,
            result.prepared.box,
            f"change {total:+.1f} (paired) - {manifest.name} {manifest.version}", (), result.image.full_shape,
        )  # fmt: skip
        write_overlay(picture, out / name)
        names.append(name)
    return names


def change_record(
    manifest: Manifest,
    earlier: ScoredSitting,
    later: ScoredSitting,
    kind: str,
    level: float | None,
    graph: PairedGraph | None = None,
    overlays: tuple[Path, str] | None = None,
) -> dict:
    """The JSON record of one pair; ``error`` set when the pair cannot give a change. With the bundle's
    paired ``graph`` the change is the paired route's, where the two sittings' films can be matched, and
    ``overlays`` (folder, file stem) receives its CAM over each follow-up film."""
    record = {"kind": kind, "route": "difference", "baseline": earlier.summary(), "followup": later.summary()}
    problem = earlier.problem or later.problem
    if problem is None and earlier.hands != later.hands:
        problem = (
            f"the baseline shows {'+'.join(earlier.hands)} and the follow-up {'+'.join(later.hands)}: "
            "a change needs the same hands at both visits"
        )
    if problem is not None:
        return {**record, "change": None, "error": problem}
    years = None
    if earlier.sitting.date is not None and later.sitting.date is not None:
        years = (later.sitting.date - earlier.sitting.date).days / 365.25
    before, after = earlier.grades(), later.grades()
    per_area = None
    if before is not None and after is not None:
        per_area = {c: after[c] - before[c] for c in after if c in before}
    matched = film_pairs(earlier.results, later.results) if graph is not None else None
    if matched is not None:
        cams: list = []
        record["route"], per_area = "paired", paired_change(graph, matched, cams)
        total = sum(per_area.values())
        if overlays is not None:
            record["change_overlays"] = write_change_overlays(*overlays, cams, manifest, total)
    else:
        total = later.score - earlier.score
        if graph is not None:
            record["note"] = "the two visits' films are not laid out alike (one film vs one per hand): difference route"
    calibration = manifest.outputs.change_for(record["route"])
    change = measure_change(calibration, total, (earlier.score + later.score) / 2, years, level)
    record["change"] = change.to_dict()
    if per_area is not None:
        record["per_area"] = {c: round(v, 3) for c, v in per_area.items()}
        for kind_name, marker in (("erosion", "_E__"), ("narrowing", "_J__")):
            record["change"][kind_name] = round(sum(v for c, v in per_area.items() if marker in c), 3)
    if calibration is None:
        record["note"] = (
            f"the bundle has no change calibration for the {record['route']} route: no interval, no SDC, "
            "no progressor flag"
        )
    return record


def load_pseudonym_key(path: Path) -> bytes:
    """The key that pseudonymises patient IDs, created (random, owner-only) on first use. The same key gives
    the same pseudonym in every run; without it a pseudonym cannot be traced back."""
    path = Path(path)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(KEY_BYTES)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_pseudonym_key(path)  # another run created it first
        except OSError as exc:
            raise OutputError(f"cannot create the pseudonym key {path} ({exc.strerror or exc})") from None
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key)
        return key
    except OSError as exc:
        raise OutputError(f"cannot read the pseudonym key {path} ({exc.strerror or exc})") from None
    if len(key) < 16:
        raise OutputError(f"{path}: the pseudonym key is too short (at least 16 bytes)")
    return key


def pseudonym(patient_id: str, key: bytes) -> str:
    """``P-`` and 16 hex digits of HMAC-SHA256(key, patient ID)."""
    return PSEUDONYM_PREFIX + hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def default_key_path() -> Path:
    """``pseudonym.key`` in svdh's state folder (``$XDG_STATE_HOME/svdh``, else ``~/.local/state/svdh``)."""
    from .files import state_folder

    return state_folder() / "pseudonym.key"
