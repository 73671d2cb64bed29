"""Diagnostic logging for ``svdh-run`` (``--log-level``), with patient data kept out.

svdh's own messages name images by path and SOP Instance UID, never by
patient. pydicom, pynetdicom and highdicom can print whole data elements
(patient name, ID, birth date) at debug level, and their error records carry
tracebacks where svdh prints one line: their messages are shown only when the
user opted into patient data with ``--include-phi``.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum


class LogLevel(str, Enum):
    """How much ``--log-level`` shows on stderr."""

    warning = "warning"
    info = "info"
    debug = "debug"


THIRD_PARTY = ("pydicom", "pynetdicom", "highdicom")
LOGGER = "svdh_runtime"


def configure(level: str = "warning", include_phi: bool = False) -> None:
    """Send svdh's log records at ``level`` and above to stderr."""
    numeric = getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger(LOGGER)
    ours.handlers[:] = [handler]
    ours.setLevel(numeric)
    ours.propagate = False
    for name in THIRD_PARTY:
        other = logging.getLogger(name)
        other.propagate = False
        if include_phi:
            other.handlers[:] = [handler]
            other.setLevel(numeric)
        else:
            other.handlers[:] = [logging.NullHandler()]
