"""Inference backends behind one small protocol, chosen by name."""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import BackendError
from .base import Backend
from .choice import BackendChoice

BACKEND_NAMES = tuple(choice.value for choice in BackendChoice)


def create_backend(name: str, bundle: Bundle, threads: int | None = None) -> Backend:
    """Open ``bundle`` on the named backend (``auto`` picks the best available)."""
    name = name.value if isinstance(name, BackendChoice) else name
    if name in ("auto", "onnxruntime"):
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle.model_bytes, threads=threads)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


__all__ = ["Backend", "BackendChoice", "BACKEND_NAMES", "create_backend"]
