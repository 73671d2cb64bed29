"""What a warm process (``svdh-run serve-local``) keeps between commands: each bundle read once and each
backend opened once. In any other process nothing is kept (:func:`active` is False)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .manifest import MANIFEST_NAME

if TYPE_CHECKING:
    from .backends import Backend
    from .bundle import Bundle

_state: dict[str, dict] | None = None  # None: not a warm process


def enable() -> None:
    """Keep bundles and backends from now on (the warm process calls this once)."""
    global _state
    if _state is None:
        _state = {"bundles": {}, "backends": {}}


def active() -> bool:
    return _state is not None


def _bundle_key(model: Path | None) -> tuple:
    """A bundle is read again when its manifest changed (replaced, re-exported, given a new file)."""
    from .bundle import default_bundle_path

    root = Path(model).resolve() if model is not None else default_bundle_path()
    try:
        info = os.stat(root / MANIFEST_NAME)
    except OSError:
        return (str(root), None)  # load_bundle says what is wrong; nothing is kept
    return (str(root), info.st_mtime_ns, info.st_size, info.st_ino)


def bundle(model: Path | None, load: Callable[[], Bundle]) -> Bundle:
    """The bundle ``model`` (None: the default), read by ``load`` the first time or when it changed."""
    key = _bundle_key(model)
    bundles = _state["bundles"]
    if key not in bundles or key[1] is None:
        bundles.clear()
        bundles[key] = load()
    return bundles[key]


def backend(bundle_: Bundle, choice: tuple, open_: Callable[[], tuple[Backend, str]]) -> tuple[Backend, str]:
    """The backend (and the line that says which) for ``bundle_`` and ``choice`` (backend, threads), opened by
    ``open_`` the first time. Backends of a bundle that was read again are closed."""
    backends = _state["backends"]
    bundle_key = _bundle_key(bundle_.path)
    key = (bundle_key, *choice)
    if key not in backends:
        for stale in [k for k in backends if k[0] != bundle_key]:
            backends.pop(stale)[0].close()
        backends[key] = open_()
    return backends[key]
