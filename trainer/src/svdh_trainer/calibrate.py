"""``svdh-train calibrate``: fit a bundle's conformal intervals on labelled images it never saw.

The bundle scores the images through the runtime (as a user's images are
scored); :mod:`svdh_trainer.intervals` fits each target's difficulty model and
conformal residuals; the manifest gets them in ``outputs.intervals`` and a
record of the calibration in ``metrics.interval_calibration``. The model file is
untouched, so the bundle's checksums still hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.manifest import MANIFEST_NAME, check_level
from svdh_runtime.scoring import Scorer

from .change_metrics import fit_change, paired_measure, sitting_scores
from .datasets import DatasetError, read_dataset
from .intervals import MIN_IMAGES, fit_interval
from .scored_set import SUBTOTAL_TARGETS, score_samples


def calibrate_bundle(
    bundle_dir: Path, data: Path, level: float, seed: int = 0, progress: Callable = lambda it: it
) -> dict:
    """Calibrate the intervals of the bundle in ``bundle_dir`` on ``data``; returns what was recorded."""
    check_level(level)
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    scorer = Scorer(bundle, create_backend("onnxruntime", bundle))
    samples = read_dataset(Path(data))
    scored = score_samples(scorer, samples, progress)
    targets = ("total", *SUBTOTAL_TARGETS) if manifest.outputs.per_area else ("total",)
    calibrations, skipped = [], {}
    for target in targets:
        target_data = scored.calibration_data(target)
        if len(target_data.truth) < MIN_IMAGES:
            if target == "total":
                raise DatasetError(
                    f"{data}: {len(target_data.truth)} images scored; calibration needs at least {MIN_IMAGES}"
                )
            skipped[target] = f"{len(target_data.truth)} images (at least {MIN_IMAGES} needed)"
            continue
        calibrations.append(fit_interval(target, target_data, seed, level))
    record = {
        "data": str(data),
        "images_scored": len(scored.scored),
        "failures": scored.failures,
        "rejected": scored.rejected,
        "level": level,
        "seed": seed,
        "method": "split conformal, locally adaptive: |error| / (base + per_point * estimate + per_disagreement * "
        "|score - areas sum|); difficulty fitted on one half of the patients, residual quantile on the other",
        "targets": {
            c.target: {"residuals": len(c.scores), "quantile": round(c.quantile(level), 4)} for c in calibrations
        },
        **({"skipped": skipped} if skipped else {}),
    }
    changes = manifest.outputs.changes
    if any(s.sitting is not None for s in samples):
        sittings = sitting_scores(scored, samples, Path(data))
        changes = (fit_change(sittings, seed, level),)
        if manifest.outputs.paired is not None:
            from svdh_runtime.paired import PairedGraph

            changes += (fit_change(sittings, seed, level, paired_measure(scored, PairedGraph(bundle))),)
        record["changes"] = {
            change.route: {
                "sdc": change.sdc,
                "sdc_pairs": change.sdc_pairs,
                "zero_level": change.zero_level,
                "residuals": len(change.scores),
                "quantile": round(change.quantile(level), 4),
            }
            for change in changes
        }
        record["change_method"] = (
            "SDC = 1.96 SD(d) / sqrt(2), d = change on the first films - change on the retest films of the same "
            "visits (Bruynesteijn et al. 2005); interval: split conformal, |true change - change| / (base + "
            "per_point * the pair's mean score)"
        )
    outputs = dataclasses.replace(manifest.outputs, intervals=tuple(calibrations), changes=changes)
    updated = dataclasses.replace(
        manifest, outputs=outputs, metrics={**manifest.metrics, "interval_calibration": record}
    )
    updated.write(Path(bundle_dir) / MANIFEST_NAME)
    return record
