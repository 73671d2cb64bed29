"""The protocol every inference backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..manifest import OutputSpec

OUTPUT_NAMES = ("score", "severity_probs", "cam")
OPTIONAL_OUTPUTS = ("ood_distance",)  # the input gate, in bundles that have one


class Backend(Protocol):
    """Runs a bundle's graph: ``image[N,1,H,W]`` in; ``score``, ``severity_probs``, ``cam`` (and
    ``ood_distance`` when the graph has it) out."""

    name: str

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def output_shape_problems(shapes: dict[str, Sequence[object]], spec: OutputSpec) -> list[str]:
    """How the graph's output shapes (batch first; a dimension may be symbolic, i.e. not an int) disagree
    with the manifest: ``score[N]``, ``severity_probs[N, classes]``, ``cam[N, h, w]``, ``ood_distance[N]``."""
    expected: dict[str, tuple[object, ...]] = {
        "score": (None,),
        "severity_probs": (None, len(spec.severity_classes)),
        "cam": (None, spec.cam_height or None, spec.cam_width or None),
        "ood_distance": (None,),
    }
    problems = []
    for name, shape in shapes.items():
        want = expected.get(name)
        if want is None:
            continue
        shape = tuple(shape)
        if len(shape) != len(want) or any(
            isinstance(have, int) and need is not None and have != need for have, need in zip(shape, want)
        ):
            shown = "x".join("N" if need is None else str(need) for need in want)
            problems.append(f"{name} has shape {list(shape)}, the manifest says [{shown}]")
    return problems
