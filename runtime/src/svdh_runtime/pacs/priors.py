"""The node's memory of what it scored: a small pseudonymised index of prior results, per patient.

When a follow-up arrives for a patient the node has already scored, its SR
reports the change from the latest earlier result showing the same hands and
references that prior instance. The index lives in the spool's ``priors/``:
one JSON file per patient, named by a keyed hash of the PatientID (the key,
``priors/pseudonym.key``, is made on first use, owner-only), holding for each
result only what a change needs: the prior's UIDs (to reference it), date and
time, hands, score and per-area grades, and its prepared canvas (``.npy``, for
the paired graph). No name, ID or birth date is stored. A patient keeps at
most :data:`MAX_PRIORS` results, the latest.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes, atomic_write_text
from ..progression import load_pseudonym_key, pseudonym

MAX_PRIORS = 20


@dataclass(frozen=True)
class Prior:
    """One scored image as the index keeps it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    date: str  # ISO date of the acquisition (else the study)
    time: str  # HHMMSS, "" when not given
    hands: tuple[str, ...]
    score: float
    grades: dict[str, float] = field(default_factory=dict)  # the shown hands' area grades (joint-head bundles)
    canvas: str = ""  # file name of the prepared canvas under priors/, "" when not kept

    @property
    def when(self) -> tuple[dt.date, str]:
        return dt.date.fromisoformat(self.date), self.time


class PriorIndex:
    """The spool's ``priors/`` folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._key = load_pseudonym_key(self.root / "pseudonym.key")

    def _file(self, patient_id: str) -> Path:
        return self.root / f"{pseudonym(patient_id, self._key)}.json"

    def entries(self, patient_id: str) -> list[Prior]:
        try:
            data = json.loads(self._file(patient_id).read_text(encoding="utf-8"))
            return [Prior(**{**entry, "hands": tuple(entry["hands"])}) for entry in data]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, KeyError):
            return []  # a damaged index costs the change, never the score

    def latest_before(
        self, patient_id: str, when: tuple[dt.date, str], hands: tuple[str, ...], uid: str
    ) -> Prior | None:
        """The latest result of this patient taken before ``when`` that shows the same hands (not ``uid``)."""
        earlier = [
            p for p in self.entries(patient_id) if p.when < when and p.hands == hands and p.sop_instance_uid != uid
        ]
        return max(earlier, key=lambda p: p.when, default=None)

    def canvas(self, prior: Prior) -> np.ndarray | None:
        if not prior.canvas:
            return None
        try:
            return np.load(self.root / prior.canvas, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError):
            return None

    def add(self, patient_id: str, prior: Prior, canvas: np.ndarray | None) -> None:
        """Remember a result (replacing one of the same instance), keeping the latest :data:`MAX_PRIORS`."""
        if canvas is not None:
            name = f"{pseudonym(prior.sop_instance_uid, self._key)}.npy"
            buffer = _npy_bytes(canvas.astype(np.float16))
            atomic_write_bytes(self.root / name, buffer)
            prior = Prior(**{**asdict(prior), "canvas": name})
        kept = [p for p in self.entries(patient_id) if p.sop_instance_uid != prior.sop_instance_uid] + [prior]
        kept.sort(key=lambda p: p.when)
        for dropped in kept[:-MAX_PRIORS]:
            if dropped.canvas:
                (self.root / dropped.canvas).unlink(missing_ok=True)
        atomic_write_text(self._file(patient_id), json.dumps([asdict(p) for p in kept[-MAX_PRIORS:]]) + "\n")


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
