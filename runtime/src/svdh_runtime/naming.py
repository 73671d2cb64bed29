"""How a run names its inputs in everything it prints and writes: by path, or (``--no-paths``) by a hash.

A file name is the user's own choice, and some sites name files after the
patient (``Smith_John_hands.dcm``). With ``--no-paths`` every input is named
``input-`` followed by the first 12 hex digits of the SHA-256 of its resolved
path: in stdout, stderr, the JSON records, ``results.jsonl``, ``summary.csv``,
``report.html``, the names of the files written under ``--out`` and svdh's own
log lines. The hash is stable, so a rerun on the same ``--out`` still resumes.
A DICOM input's record also carries its SOP Instance UID, which is what a PACS
knows it by.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

LABEL_PREFIX = "input-"


def path_label(path: Path) -> str:
    """``input-`` and 12 hex digits of the SHA-256 of the resolved path."""
    digest = hashlib.sha256(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return LABEL_PREFIX + digest[:12]


class InputNames:
    """Names of one run's inputs; with ``hide_paths`` no path of the user's ever reaches the output."""

    def __init__(self, hide_paths: bool = False) -> None:
        self.hide_paths = hide_paths
        self._labels: dict[str, str] = {}  # path text as it may appear in a message -> its label

    def _label(self, path: Path) -> str:
        label = path_label(path)
        for text in (str(path), os.path.realpath(path)):
            self._labels.setdefault(text, label)
        return label

    def source(self, path: Path) -> str:
        """How records and messages name this input."""
        return self._label(path) if self.hide_paths else str(path)

    def key(self, path: Path) -> str:
        """What identifies the input in ``results.jsonl`` across runs."""
        return self._label(path) if self.hide_paths else os.path.realpath(path)

    def stem(self, path: Path) -> str:
        """The start of the names of the files written for this input under ``--out``."""
        return self._label(path) if self.hide_paths else (Path(path).name.split(".")[0] or "image")

    def scrub(self, text: str | None) -> str | None:
        """``text`` with every path this run has named replaced by its label (longest paths first)."""
        if not self.hide_paths or not text:
            return text
        for shown in sorted(self._labels, key=len, reverse=True):
            if shown and shown in text:
                text = text.replace(shown, self._labels[shown])
        return text

    def log_filter(self) -> logging.Filter:
        """A filter for svdh's log handler that scrubs paths from every record."""
        names = self

        class _ScrubPaths(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                if names.hide_paths:
                    record.msg, record.args = names.scrub(record.getMessage()), None
                return True

        return _ScrubPaths()
