"""Diagnostic logging for ``svdh-run`` (``--log-level``), with patient data kept out.

svdh's own messages name images by path and SOP Instance UID, never by
patient. pydicom, pynetdicom and highdicom can print whole data elements
(patient name, ID, birth date) at debug level, and their error records carry
tracebacks where svdh prints one line: their messages are shown only when the
user opted into patient data with ``--include-phi``. Python warnings are
routed through logging too (pydicom warns with raw element values, such as an
invalid UID that holds a name), and held back the same way: no reader's
``warnings.catch_warnings`` (not thread-safe) is what keeps them off stderr.
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


THIRD_PARTY = ("pydicom", "pynetdicom", "highdicom", "py.warnings")  # py.warnings: every warnings.warn
LOGGER = "svdh_runtime"


def configure(level: str = "warning", include_phi: bool = False, scrub: logging.Filter | None = None) -> None:
    """Send svdh's log records at ``level`` and above to stderr (through ``scrub``, when given)."""
    numeric = getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if scrub is not None:
        handler.addFilter(scrub)
    ours = logging.getLogger(LOGGER)
    ours.handlers[:] = [handler]
    ours.setLevel(numeric)
    ours.propagate = False
    logging.captureWarnings(True)
    for name in THIRD_PARTY:
        other = logging.getLogger(name)
        other.propagate = False
        if include_phi:
            other.handlers[:] = [handler]
            other.setLevel(numeric)
        else:
            other.handlers[:] = [logging.NullHandler()]
