"""The input gate: how far an image's features lie from the training radiographs, fitted at export time.

The distance (:class:`svdh_exporter.model.OodDistance`) is computed inside the
graph from the pooled features the score is made from, so every backend
returns it as ``ood_distance``. It is fitted on training radiographs under
the training augmentation (:mod:`svdh_exporter.augment`: pose, exposure
curve, contrast, noise), i.e. on what the model was trained to handle, and
its threshold is set on other radiographs the fit never saw (a held-back
fifth of the fitting folder, or ``--ood-calibrate``), augmented the same way:
the 99.5th percentile of their distances times a margin. Images that are not
hand radiographs lie far beyond it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svdh_runtime.errors import BundleError, InputError
from svdh_runtime.imageio import read_image
from svdh_runtime.manifest import Preprocessing
from svdh_runtime.preprocess import prepare_loaded

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg"}
COMPONENTS = 128
MIN_FIT_IMAGES, MIN_CALIBRATION_IMAGES, ADVISED_FIT_IMAGES = 10, 3, 200
QUANTILE = 0.995
MARGIN = 1.25
METHOD = (
    "Mahalanobis distance of the pooled features in their top {k} principal directions, plus the scaled "
    "residual, normalised so that fitting images are near 1 (sqrt of the mean of k+1 squared terms)"
)


@dataclass(frozen=True)
class OodFit:
    """A fitted gate: the torch module for the graph and what the manifest records about it."""

    module: Any  # OodDistance
    threshold: float
    record: dict[str, Any]


def image_files(folder: Path) -> list[Path]:
    """Radiographs under ``folder`` (DICOM, PNG, JPEG), in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a folder of radiographs")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BundleError(f"{folder}: holds no DICOM, PNG or JPEG files")
    return files


def prepared(files: list[Path], spec: Preprocessing, log: Callable[[str], None], what: str) -> np.ndarray:
    """Model canvases ``[N, 1, H, W]`` of the files that can be read (the others are skipped)."""
    canvases = []
    for index, path in enumerate(files, 1):
        try:
            canvases.append(prepare_loaded(read_image(path), spec).canvas)
        except InputError:
            continue
        if index % 250 == 0 or index == len(files):
            log(f"  {what}: {index}/{len(files)} images read")
    least = MIN_FIT_IMAGES if what == "fit" else MIN_CALIBRATION_IMAGES
    if len(canvases) < least:
        raise BundleError(f"the {what} images must hold at least {least} readable radiographs, found {len(canvases)}")
    if what == "fit" and len(canvases) < ADVISED_FIT_IMAGES:
        log(f"  warning: a gate fitted on {len(canvases)} images is rough; {ADVISED_FIT_IMAGES}+ are advised")
    return np.stack(canvases)[:, None]


def features(graph: Any, canvases: np.ndarray, spec: Preprocessing, seed: int, batch: int = 16) -> np.ndarray:
    """The graph's pooled features of ``canvases`` under the training augmentation (float64)."""
    import torch

    from .augment import augment_batch

    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for start in range(0, len(canvases), batch):
            images = augment_batch(torch.from_numpy(canvases[start : start + batch]), spec, generator).images
            rows.append(graph.features(images).double().numpy())
    return np.concatenate(rows)


def fit_distance(fit_features: np.ndarray, components: int = COMPONENTS) -> Any:
    """An :class:`OodDistance` fitted on ``fit_features`` ``[N, C]``."""
    import torch

    from .model import OodDistance

    count, width = fit_features.shape
    k = max(1, min(components, width - 1, count - 1))
    mean = fit_features.mean(axis=0)
    centred = fit_features - mean
    _, singular, rows = np.linalg.svd(centred / np.sqrt(count - 1), full_matrices=False)
    directions = rows[:k].T
    residual = centred - centred @ directions @ directions.T
    rho = float((residual**2).sum(axis=1).mean())
    return OodDistance(
        torch.from_numpy(mean), torch.from_numpy(directions), torch.from_numpy(singular[:k] ** 2), rho
    ).eval()


def distances(module: Any, values: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(values).float()).double().numpy()


def fit_gate(
    graph: Any,
    spec: Preprocessing,
    fit_folder: Path,
    calibration_folder: Path | None,
    max_images: int,
    log: Callable[[str], None],
) -> OodFit:
    """Fit the distance on radiographs of ``fit_folder``, set the threshold on ones it did not see."""
    files = image_files(fit_folder)
    rng = np.random.default_rng(0)
    if calibration_folder is None:
        files = [files[i] for i in rng.permutation(len(files))[: max_images + max_images // 4]]
        split = max(len(files) * 4 // 5, 1)
        fit_files, calibration_files = files[:split], files[split:]
    else:
        fit_files = [files[i] for i in rng.permutation(len(files))[:max_images]]
        calibration_files = image_files(calibration_folder)
    log(f"fitting the input gate on {len(fit_files)} radiographs, calibrating on {len(calibration_files)}")
    fit_features = features(graph, prepared(fit_files, spec, log, "fit"), spec, seed=1)
    module = fit_distance(fit_features)
    calibration = distances(
        module, features(graph, prepared(calibration_files, spec, log, "calibration"), spec, seed=2)
    )
    threshold = float(np.quantile(calibration, QUANTILE) * MARGIN)
    record = {
        "method": METHOD.format(k=module.directions.shape[1]),
        "fit_images": len(fit_features),
        "fit_folder": str(fit_folder),
        "calibration_images": len(calibration),
        "calibration_folder": str(calibration_folder or f"{fit_folder} (a held-back fifth)"),
        "calibration_distance_quantiles": {
            q: round(float(np.quantile(calibration, float(q))), 4) for q in ("0.5", "0.99", "0.995", "1.0")
        },
        "threshold": round(threshold, 4),
        "threshold_rule": f"{QUANTILE} quantile of the calibration distances x {MARGIN}",
        "augmentation": "training augmentation (svdh_exporter.augment) on fit and calibration images",
    }
    log(f"input gate: threshold {threshold:.3f} (calibration median {record['calibration_distance_quantiles']['0.5']})")
    return OodFit(module, threshold, record)


def recalibrate_threshold(
    bundle_dir: Path,
    inputs: list[Path],
    log: Callable[[str], None],
    quantile: float = QUANTILE,
    margin: float = MARGIN,
) -> dict[str, Any]:
    """Set a bundle's gate threshold from a site's own radiographs (runtime only: no torch, no checkpoint).

    The distance itself (mean, principal directions) stays as fitted at export;
    only the threshold moves, to ``quantile`` of these images' distances x ``margin``.
    The manifest records the change; returns it.
    """
    import dataclasses
    import datetime as dt

    from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from svdh_runtime.bundle import load_bundle
    from svdh_runtime.manifest import MANIFEST_NAME

    bundle = load_bundle(bundle_dir)
    old = bundle.manifest.outputs.ood_threshold
    if old <= 0:
        raise BundleError(f"{bundle_dir}: the bundle has no input gate (export it with --ood-fit)")
    files = [f for item in inputs for f in (image_files(item) if Path(item).is_dir() else [Path(item)])]
    canvases = prepared(files, bundle.manifest.preprocessing, log, "calibration")
    if len(canvases) < 20:
        raise BundleError(f"calibrating needs at least 20 readable radiographs, found {len(canvases)}")
    backend = OnnxRuntimeBackend(bundle.model_bytes)
    found = np.concatenate([backend.infer(canvases[i : i + 8])["ood_distance"] for i in range(0, len(canvases), 8)])
    threshold = float(np.quantile(found, quantile) * margin)
    change = {
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (3.10)
        "images": len(found),
        "previous_threshold": old,
        "threshold": round(threshold, 4),
        "rule": f"{quantile} quantile of the site's distances x {margin}",
        "distance_quantiles": {q: round(float(np.quantile(found, float(q))), 4) for q in ("0.5", "0.99", "1.0")},
    }
    gate = dict(bundle.manifest.provenance.get("input_gate", {}))
    gate["recalibrations"] = [*gate.get("recalibrations", []), change]
    manifest = dataclasses.replace(
        bundle.manifest,
        outputs=dataclasses.replace(bundle.manifest.outputs, ood_threshold=round(threshold, 4)),
        provenance={**bundle.manifest.provenance, "input_gate": gate},
    )
    manifest.write(Path(bundle_dir) / MANIFEST_NAME)
    log(
        f"input gate threshold {old:.3f} -> {threshold:.3f} (median distance of these images {change['distance_quantiles']['0.5']})"
    )
    if threshold > 2 * old:
        log("  warning: these images are far from the training radiographs; validate the scores on them before use")
    return change
