"""Inference backends behind one small protocol, chosen by name or automatically."""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import BackendError
from .base import Backend
from .choice import BackendChoice
from .selection import BackendSelection, select_backend

BACKEND_NAMES = tuple(choice.value for choice in BackendChoice)


def create_backend(name: str, bundle: Bundle, threads: int | None = None) -> Backend:
    """Open ``bundle`` on the named backend (``auto`` picks the best available)."""
    name = name.value if isinstance(name, BackendChoice) else name
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return select_backend(name, bundle, threads=threads).backend


__all__ = ["Backend", "BackendChoice", "BackendSelection", "BACKEND_NAMES", "create_backend", "select_backend"]
