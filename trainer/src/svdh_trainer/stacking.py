"""Combiners for ensembles: averaging, and ridge-regression stacking on out-of-fold predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .datasets import DatasetError


def fit_ridge(predictions: np.ndarray, truth: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """Ridge regression ``truth ~ bias + predictions @ weights`` (the bias is not penalised).

    ``predictions`` is ``[N, M]``: one column of out-of-fold scores per member.
    """
    x = np.asarray(predictions, np.float64)
    y = np.asarray(truth, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) < x.shape[1] + 1:
        raise DatasetError(f"stacking needs more cases than members (cases {len(y)}, members {x.shape[-1]})")
    if alpha < 0:
        raise DatasetError("ridge alpha must be >= 0")
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return weights, float(y_mean - x_mean @ weights)


def read_oof(path: Path) -> dict[str, tuple[float, float]]:
    """``image -> (truth, prediction)`` from an ``oof.csv`` written by ``svdh-train cv``."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"image", "truth", "prediction"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{path}: not an out-of-fold file (missing column(s) {', '.join(sorted(missing))})")
            rows = {row["image"]: (float(row["truth"]), float(row["prediction"])) for row in reader}
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such out-of-fold file (run svdh-train cv first)") from None
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable out-of-fold file ({exc})") from None
    if not rows:
        raise DatasetError(f"{path}: no predictions")
    return rows


def align_oof(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Members' out-of-fold predictions on the same images: ``([N, M] predictions, [N] truth)``."""
    tables = [read_oof(p) for p in paths]
    images = sorted(tables[0])
    for path, table in zip(paths[1:], tables[1:]):
        if set(table) != set(images):
            raise DatasetError(
                f"{path}: predicts other images than {paths[0]} (the members' cross-validation must use the same data)"
            )
    truth = np.array([tables[0][i][0] for i in images])
    for path, table in zip(paths[1:], tables[1:]):
        if not np.allclose([table[i][0] for i in images], truth):
            raise DatasetError(f"{path}: true scores differ from {paths[0]}")
    return np.array([[table[i][1] for table in tables] for i in images]), truth
