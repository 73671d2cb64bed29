"""``svdh-run --build-engine``: have the exporter build a TensorRT engine for this box.

The runtime never imports the exporter (dependencies point one way); it runs
``svdh-export build-engine`` as a separate process and then looks for the new
engine like any other.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from .errors import BackendError, MissingDependencyError


def build_engine_for(bundle_dir: Path) -> None:
    """Run ``svdh-export build-engine BUNDLE``; its progress shows on this terminal."""
    if importlib.util.find_spec("svdh_exporter") is None:
        raise MissingDependencyError(
            "--build-engine needs the exporter and TensorRT: pip install 'svdh-exporter[tensorrt]'"
        )
    command = [sys.executable, "-m", "svdh_exporter", "build-engine", str(bundle_dir)]
    if subprocess.run(command).returncode != 0:
        raise BackendError("building a TensorRT engine failed (see the message above)")
