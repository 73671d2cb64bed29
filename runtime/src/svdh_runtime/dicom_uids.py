"""DICOM UIDs as the standard writes them, and nothing else: senders have been seen to put names there."""

from __future__ import annotations

import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(text: str) -> bool:
    """True for a UID of digits and dots, at most 64 characters; anything else is never printed."""
    return len(text) <= 64 and _UID.match(text) is not None
