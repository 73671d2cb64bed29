"""Keep ``svdh-run``'s cold start short: import pydicom without the ``requests`` package.

pydicom imports ``requests`` (when it is installed) only to download its own
test files, which the runtime never does; that import alone costs ~0.15 s of
every ``svdh-run``. While pydicom's downloader module is first imported,
``requests`` is hidden, so pydicom falls back to the standard library's urllib
for those downloads; afterwards ``requests`` imports normally for any code
that wants it.
"""

from __future__ import annotations

import sys


def import_pydicom_without_requests() -> None:
    """Import pydicom (and its data downloader) with ``requests`` hidden, then unhide it."""
    if "pydicom" in sys.modules or "requests" in sys.modules:
        return
    sys.modules["requests"] = None  # makes ``import requests`` raise ImportError
    try:
        import pydicom.data.download  # noqa: F401
    finally:
        del sys.modules["requests"]
