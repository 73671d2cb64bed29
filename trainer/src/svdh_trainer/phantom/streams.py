"""Random streams by name, so one person can be drawn again at every visit.

A single-visit phantom draws everything from one generator in the order of use
(:meth:`Streams.shared`), which is what versions 1 and 2 do, byte for byte. A
longitudinal phantom (:mod:`.longitudinal`) draws the anatomy from
:meth:`Streams.keyed` streams: each name (``"spread"``, ``"erosion:mc2:end"``)
gets its own generator from the patient's key and the name, so what one part
draws never depends on what another drew. A joint whose grade rises at
follow-up then keeps its old bites and gains new ones, and every unchanged
joint looks as it did.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


class Streams:
    """``streams(name)`` -> the generator that part of the drawing uses."""

    def __init__(self, shared: np.random.Generator | None = None, key: Sequence[int] | None = None) -> None:
        if (shared is None) == (key is None):
            raise ValueError("give a shared generator or a key, not both")
        self._shared, self._key = shared, tuple(key or ())

    @classmethod
    def shared(cls, rng: np.random.Generator) -> Streams:
        """Every name draws from ``rng``, in the order of use."""
        return cls(shared=rng)

    @classmethod
    def keyed(cls, *key: int) -> Streams:
        """Every name draws from its own generator, seeded by ``key`` and the name: the same on every call."""
        return cls(key=key)

    def __call__(self, name: str) -> np.random.Generator:
        if self._shared is not None:
            return self._shared
        return np.random.default_rng([*self._key, zlib.crc32(name.encode())])
