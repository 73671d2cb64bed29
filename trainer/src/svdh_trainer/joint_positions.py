"""Where the joints are on the model canvas, from a phantom dataset's ``joints.json``.

The generator records every area's joint centre in source pixels. These helpers
read those records once per dataset and place them on the canvas exactly as
:func:`svdh_runtime.preprocess.placement` places the image, so the targets of the
damage map and of the joint head sit where the pixels are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdh_runtime.areas import HANDS, SITES, area_sites, grade_columns
from svdh_runtime.manifest import Preprocessing
from svdh_runtime.preprocess import placement

from .datasets import DatasetError, Sample

SITES_FILE = "joints.json"


@dataclass(frozen=True)
class CanvasPlacement:
    """How an image's source pixels map onto the canvas: ``canvas = offset + source * scale``."""

    left: float
    top: float
    scale_x: float
    scale_y: float

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.left + x * self.scale_x, self.top + y * self.scale_y


def joint_records(samples: list[Sample], required: bool) -> list[dict | None]:
    """Each sample's ``joints.json`` record (None where its dataset has none and ``required`` is false)."""
    tables: dict[Path, dict | None] = {}
    records = []
    for sample in samples:
        root = sample.path.parent.parent
        if root not in tables:
            path = root / SITES_FILE
            if not path.is_file():
                if required:
                    raise DatasetError(f"{root}: this recipe needs joint positions ({SITES_FILE}), found none")
                tables[root] = None
            else:
                try:
                    tables[root] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DatasetError(f"{path}: unreadable ({exc})") from None
        table = tables[root]
        record = None if table is None else table.get(sample.path.relative_to(root).as_posix())
        if record is None and required:
            raise DatasetError(f"{sample.path.name}: no joint positions in {root / SITES_FILE}")
        records.append(record)
    return records


def canvas_placement(record: dict, spec: Preprocessing) -> CanvasPlacement:
    """The canvas placement of the image a record describes."""
    rows, columns = record["rows"], record["columns"]
    spacing = record.get("pixel_spacing_mm")
    height, width, _ = placement((rows, columns), spec, None if spacing is None else (spacing, spacing))
    return CanvasPlacement((spec.width - width) // 2, (spec.height - height) // 2, width / columns, height / rows)


def site_targets(samples: list[Sample], spec: Preprocessing) -> np.ndarray:
    """``[N, 44, 2]``: each hand's joint sites (x, y) as fractions of the canvas width and height, LH's sites
    then RH's; NaN for a hand the image does not show, or an image without recorded positions."""
    index = {column: position for position, column in enumerate(grade_columns())}
    site_of_column = area_sites()
    targets = np.full((len(samples), len(HANDS) * len(SITES), 2), np.nan, np.float32)
    for row, record in enumerate(joint_records(samples, required=False)):
        if record is None:
            continue
        where = canvas_placement(record, spec)
        for joint in record["joints"]:
            x, y = where.point(joint["x"], joint["y"])
            targets[row, site_of_column[index[joint["column"]]]] = (x / spec.width, y / spec.height)
    return targets
