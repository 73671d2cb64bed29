"""The protocol every inference backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

OUTPUT_NAMES = ("score", "severity_probs", "cam")
OPTIONAL_OUTPUTS = ("ood_distance",)  # the input gate, in bundles that have one


class Backend(Protocol):
    """Runs a bundle's graph: ``image[N,1,H,W]`` in; ``score``, ``severity_probs``, ``cam`` (and
    ``ood_distance`` when the graph has it) out."""

    name: str

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
