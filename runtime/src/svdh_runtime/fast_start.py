"""Keep ``svdh-run``'s cold start short: import pydicom without its test-file downloader.

pydicom imports ``pydicom.data.download`` when it is imported, only to fetch
its own test files, which the runtime never does; that module pulls in
``urllib.request`` (with ``ssl`` and ``http.client``), ``tqdm`` and, when
installed, ``requests``: ~0.1-0.2 s of every ``svdh-run``. Until something
actually calls it, a stand-in answers for it: its functions import the real
module on first use (with ``requests`` hidden, so that pydicom uses the
standard library), and so does any other name asked of it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

DOWNLOADER = "pydicom.data.download"
# What pydicom.data.data_manager imports from the downloader when pydicom is imported.
_FUNCTIONS = ("data_path_with_download", "calculate_file_hash", "get_cached_filehash", "get_url_map", "get_data_dir")


def _real_downloader() -> types.ModuleType:
    """Replace the stand-in by the real module (imported with ``requests`` hidden) and return it."""
    module = sys.modules.get(DOWNLOADER)
    if module is not None and not isinstance(module, _StandIn):
        return module
    sys.modules.pop(DOWNLOADER, None)
    hide = "requests" not in sys.modules
    if hide:
        sys.modules["requests"] = None  # makes ``import requests`` raise ImportError
    try:
        module = importlib.import_module(DOWNLOADER)
    finally:
        if hide:
            del sys.modules["requests"]
    package = sys.modules.get("pydicom.data")
    if package is not None:
        package.download = module
    return module


class _StandIn(types.ModuleType):
    """``pydicom.data.download`` until it is needed."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system probing (``__path__``, ...): a plain module has none
            raise AttributeError(name)
        return getattr(_real_downloader(), name)


def _deferred(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_real_downloader(), name)(*args, **kwargs)

    call.__name__ = name
    return call


def import_pydicom_quickly() -> None:
    """Import pydicom with its downloader deferred until first use."""
    if "pydicom" in sys.modules:
        return
    stand_in = _StandIn(DOWNLOADER, "deferred: imported when first used (svdh_runtime.fast_start)")
    for name in _FUNCTIONS:
        setattr(stand_in, name, _deferred(name))
    sys.modules[DOWNLOADER] = stand_in
    try:
        import pydicom.data
    except BaseException:
        sys.modules.pop(DOWNLOADER, None)
        raise
    if sys.modules.get(DOWNLOADER) is stand_in:
        pydicom.data.download = stand_in  # as a submodule import would have bound it
