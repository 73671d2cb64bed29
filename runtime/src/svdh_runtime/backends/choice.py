"""The backends a user can ask for by name (kept import-light for the command line)."""

from __future__ import annotations

from enum import Enum


class BackendChoice(str, Enum):
    """``auto`` picks the best backend available for the bundle."""

    auto = "auto"
    onnxruntime = "onnxruntime"
