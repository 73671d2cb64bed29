"""Atomic file writes: write beside the target, then rename, so readers never see half a file.

Each write has a partial file of its own (``NAME.<random>.partial``), so two
writers of one target never share one, and the partial file is removed on
every failure (a full disk, a refused encoding, an interrupt): nothing is left
behind but the previous version of the target, if there was one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def _process_umask() -> int:
    """The umask, read once at import (setting it to read it is not safe once threads write files)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()  # what open() would give a new file


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A fresh partial path to write to; renamed onto ``path`` when the block succeeds, removed when not."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=PARTIAL_SUFFIX)
    os.close(descriptor)
    partial = Path(name)
    try:
        yield partial
        os.chmod(partial, _FILE_MODE)  # mkstemp makes it 0600: a bundle or result must read as any new file does
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as partial:
        partial.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_partials(folder: Path) -> int:
    """Delete partial files left under ``folder`` by a process that was killed mid-write; how many."""
    removed = 0
    for partial in Path(folder).rglob(f"*{PARTIAL_SUFFIX}"):
        try:
            partial.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def state_folder() -> Path:
    """svdh's per-user state folder: ``$XDG_STATE_HOME/svdh`` (when that is an absolute path, as the XDG
    base-directory specification requires), else ``~/.local/state/svdh``."""
    state_home = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local" / "state"
    return base / "svdh"
