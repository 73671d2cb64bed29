"""The protocol every inference backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..manifest import OutputSpec

OUTPUT_NAMES = ("score", "severity_probs", "cam")
JOINT_OUTPUTS = ("areas", "hands", "joints")  # per-area grades, hands shown, joint positions (per-area bundles)
GATE_OUTPUT = "ood_distance"  # the input gate, in bundles that have one
OPTIONAL_OUTPUTS = (*JOINT_OUTPUTS, GATE_OUTPUT)


class Backend(Protocol):
    """Runs a bundle's graph: ``image[N,1,H,W]`` in; ``score``, ``severity_probs``, ``cam`` (and the
    optional outputs the graph has: ``areas``, ``hands``, ``joints``, ``ood_distance``) out."""

    name: str

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def output_shape_problems(shapes: dict[str, Sequence[object]], spec: OutputSpec) -> list[str]:
    """How the graph's output shapes (batch first; a dimension may be symbolic, i.e. not an int) disagree
    with the manifest: ``score[N]``, ``severity_probs[N, classes]``, ``cam[N, h, w]``, ``areas[N, 62]``,
    ``hands[N, 2]``, ``joints[N, 62, 2]``, ``ood_distance[N]``; and per-area outputs the manifest promises
    but the graph lacks."""
    from ..areas import HANDS, grade_columns

    columns = len(grade_columns())
    expected: dict[str, tuple[object, ...]] = {
        "score": (None,),
        "severity_probs": (None, len(spec.severity_classes)),
        "cam": (None, spec.cam_height or None, spec.cam_width or None),
        "areas": (None, columns),
        "hands": (None, len(HANDS)),
        "joints": (None, columns, 2),
        GATE_OUTPUT: (None,),
    }
    problems = []
    if spec.per_area:
        problems += [f"the manifest promises per-area output {name}, the model has none" for name in JOINT_OUTPUTS
                     if name not in shapes]  # fmt: skip
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
