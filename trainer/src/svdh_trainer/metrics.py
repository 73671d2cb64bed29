"""Metrics of score regression and severity classification (numpy only)."""

from __future__ import annotations

import numpy as np

from svdh_runtime.manifest import SeverityClass, severity_index


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 2 or pred.std() == 0 or true.std() == 0:
        return float("nan")
    return float(np.corrcoef(pred, true)[0, 1])


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(true, float)) ** 2)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def severity_labels(scores: np.ndarray, classes: tuple[SeverityClass, ...]) -> np.ndarray:
    return np.array([severity_index(float(s), classes) for s in scores], dtype=np.int64)


def evaluate_predictions(
    pred_score: np.ndarray, true_score: np.ndarray, pred_class: np.ndarray, classes: tuple[SeverityClass, ...]
) -> dict[str, float]:
    """PCC, RMSE and MAE of the score; accuracy of the severity class against the true score's class."""
    true_class = severity_labels(true_score, classes)
    return {
        "n": int(len(true_score)),
        "pcc": round(pearson(pred_score, true_score), 4),
        "rmse": round(rmse(pred_score, true_score), 3),
        "mae": round(mae(pred_score, true_score), 3),
        "severity_accuracy": round(float(np.mean(np.asarray(pred_class) == true_class)), 4),
    }
