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


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney probability that a positive outranks a negative, ties
    counting half); NaN without both classes."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def severity_labels(scores: np.ndarray, classes: tuple[SeverityClass, ...]) -> np.ndarray:
    return np.array([severity_index(float(s), classes) for s in scores], dtype=np.int64)


def confusion_matrix(pred: np.ndarray, true: np.ndarray, classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]`` for classes 0..classes-1."""
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return matrix


def quadratic_weighted_kappa(pred: np.ndarray, true: np.ndarray, classes: int) -> float:
    """Cohen's kappa with quadratic weights for ordinal classes 0..classes-1."""
    observed = confusion_matrix(pred, true, classes).astype(float)
    expected = np.outer(observed.sum(1), observed.sum(0)) / max(observed.sum(), 1.0)
    i, j = np.indices((classes, classes))
    weights = (i - j) ** 2 / max((classes - 1) ** 2, 1)
    denominator = float((weights * expected).sum())
    return float("nan") if denominator == 0 else 1.0 - float((weights * observed).sum()) / denominator


def _point_metrics(
    pred: np.ndarray, true: np.ndarray, pred_class: np.ndarray, true_class: np.ndarray, classes: int
) -> dict[str, float]:
    return {
        "pcc": pearson(pred, true),
        "rmse": rmse(pred, true),
        "mae": mae(pred, true),
        "severity_accuracy": float(np.mean(pred_class == true_class)),
        "severity_within_one": float(np.mean(np.abs(pred_class - true_class) <= 1)),
        "severity_kappa": quadratic_weighted_kappa(pred_class, true_class, classes),
        "severity_pcc": pearson(pred_class, true_class),
    }


def evaluate_predictions(
    pred_score: np.ndarray,
    true_score: np.ndarray,
    pred_class: np.ndarray,
    classes: tuple[SeverityClass, ...],
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Score PCC, RMSE, MAE; severity accuracy, within-one accuracy, quadratic weighted kappa and PCC.

    With ``bootstrap`` > 0, each metric also gets a percentile 95 % confidence
    interval from that many resamples of the cases (``<metric>_ci``).
    """
    pred, true = np.asarray(pred_score, float), np.asarray(true_score, float)
    pred_class = np.asarray(pred_class, int)
    true_class = severity_labels(true, classes)
    point = _point_metrics(pred, true, pred_class, true_class, len(classes))
    result: dict[str, float] = {"n": int(len(true))}
    result.update({k: round(v, 4) for k, v in point.items()})
    if bootstrap > 0 and len(true) > 1:
        rng = np.random.default_rng(seed)
        samples = {k: [] for k in point}
        for _ in range(bootstrap):
            idx = rng.integers(0, len(true), len(true))
            for k, v in _point_metrics(pred[idx], true[idx], pred_class[idx], true_class[idx], len(classes)).items():
                samples[k].append(v)
        for k, values in samples.items():
            low, high = np.nanpercentile(np.array(values, float), [2.5, 97.5])
            result[f"{k}_ci"] = [round(float(low), 4), round(float(high), 4)]
        result["bootstrap"] = bootstrap
    return result


def icc_agreement(ratings: np.ndarray) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, one rater (Shrout & Fleiss), of ``ratings``
    ``[subjects, raters]``; the agreement statistic trials report for their readers' scores."""
    x = np.asarray(ratings, float)
    n, k = x.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = x.mean()
    ms_rows = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(0) - grand) ** 2).sum() / (k - 1)
    residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    return float("nan") if denominator == 0 else float((ms_rows - ms_error) / denominator)


def pooled_area_kappa(a: np.ndarray, b: np.ndarray, max_grades: np.ndarray) -> float:
    """Quadratic weighted kappa of two sets of per-area grades ``[images, areas]``, pooled over areas of the
    same range (erosion 0-5, narrowing 0-4) and averaged by the number of grades in each pool."""
    a, b, max_grades = np.asarray(a), np.asarray(b), np.asarray(max_grades)
    kappas, weights = [], []
    for top in np.unique(max_grades):
        columns = max_grades == top
        left, right = np.rint(a[:, columns]).ravel(), np.rint(b[:, columns]).ravel()
        keep = np.isfinite(left) & np.isfinite(right)
        if keep.sum():
            kappas.append(quadratic_weighted_kappa(left[keep], right[keep], int(top) + 1))
            weights.append(keep.sum())
    return float(np.average(kappas, weights=weights)) if kappas else float("nan")
