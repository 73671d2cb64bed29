"""``svdh-run --build-engine``: have the exporter build a TensorRT engine for this box.

The runtime never imports the exporter (dependencies point one way); it runs
the ``svdh-export build-engine`` command as a separate process and then looks
for the new engine like any other.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import BackendError, MissingDependencyError, install_hint


def build_engine_for(bundle_dir: Path) -> None:
    """Run ``svdh-export build-engine BUNDLE``; its progress shows on this terminal."""
    command = shutil.which("svdh-export")
    if command is None:
        raise MissingDependencyError(
            f"--build-engine needs the svdh-export command and TensorRT: {install_hint('tensorrt', 'exporter')}"
        )
    if subprocess.run([command, "build-engine", str(bundle_dir)]).returncode != 0:
        raise BackendError("building a TensorRT engine failed (see the message above)")
