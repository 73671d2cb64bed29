"""k-fold cross-validation by patient, with out-of-fold predictions for stacking."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from svdh_runtime.files import atomic_write_text

from .config import TrainConfig
from .datasets import load_canvases, patient_folds, read_dataset
from .metrics import evaluate_predictions

OOF_FILE = "oof.csv"
OOF_COLUMNS = ["image", "patient_id", "fold", "truth", "prediction", "severity_index"]


def cross_validate(
    config: TrainConfig,
    folds: int,
    *,
    log: Callable[[str], None] = print,
    bootstrap: int = 1000,
) -> dict:
    """Fit one model per fold on the other folds; predict the held-out fold.

    Writes ``fold-<k>/`` (each a normal fit run), ``oof.csv`` (every image
    predicted once, by the model that never saw its patient), ``cv_metrics.json``
    and a report with plots; returns the out-of-fold metrics.
    """
    from svdh_exporter.checkpoint import load_network

    from .fit import fit, predict
    from .report import write_report

    root = Path(config.data.train)
    samples = read_dataset(root, config.data.format)
    root = root if root.is_dir() else root.parent
    parts = patient_folds(samples, folds, config.train.seed)
    out = Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, held in enumerate(parts, start=1):
        held_patients = {s.patient_id for s in held}
        rest = [s for s in samples if s.patient_id not in held_patients]
        log(f"fold {index}/{folds}: train on {len(rest)} images, predict {len(held)} held-out images")
        fold_config = dataclasses.replace(
            config, output=dataclasses.replace(config.output, dir=str(out / f"fold-{index}"))
        )
        best = fit(fold_config, log=log, samples=rest).best
        net, _ = load_network(best)
        pred, probs = predict(net, load_canvases(held, config.input, workers=config.data.workers or None))
        for sample, score, p in zip(held, pred, probs):
            rows.append(
                {
                    "image": sample.path.relative_to(root).as_posix(),
                    "patient_id": sample.patient_id,
                    "fold": index,
                    "truth": sample.score,
                    "prediction": round(float(score), 4),
                    "severity_index": int(p.argmax()),
                }
            )
    rows.sort(key=lambda r: r["image"])
    write_oof(out / OOF_FILE, rows)
    pred = np.array([r["prediction"] for r in rows])
    truth = np.array([r["truth"] for r in rows])
    classes = np.array([r["severity_index"] for r in rows])
    metrics = evaluate_predictions(pred, truth, classes, config.severity_classes, bootstrap=bootstrap)
    summary = {"folds": folds, "images": len(rows), "out_of_fold": metrics, "recipe": config.to_dict()}
    atomic_write_text(out / "cv_metrics.json", json.dumps(summary, indent=2) + "\n")
    write_report(
        out / "report", pred, truth, classes, config.severity_classes, metrics, f"{folds}-fold out-of-fold predictions"
    )
    return metrics


def write_oof(path: Path, rows: list[dict]) -> None:
    """Write out-of-fold predictions as CSV (atomically)."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=OOF_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
