"""Evaluation reports: predicted-vs-true scatter, severity confusion matrix, metrics table (Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from svdh_runtime.manifest import SeverityClass

from .metrics import confusion_matrix, severity_labels


def _save(figure, path: Path) -> None:  # noqa: ANN001
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(
    out: Path,
    pred: np.ndarray,
    true: np.ndarray,
    pred_class: np.ndarray,
    classes: tuple[SeverityClass, ...],
    metrics: dict,
    title: str,
) -> Path:
    """Write ``scatter.png``, ``confusion.png``, ``predictions.csv`` and ``report.md`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = [c.name for c in classes]
    top = max(float(np.max(true, initial=0)), float(np.max(pred, initial=0)), 10.0) * 1.05

    figure, axis = plt.subplots(figsize=(5, 5), dpi=120)
    axis.scatter(true, pred, s=8, alpha=0.6)
    axis.plot([0, top], [0, top], color="grey", linewidth=1)
    axis.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="true SvdH total",
        ylabel="predicted SvdH total",
        title=f"PCC {metrics['pcc']:.3f}, RMSE {metrics['rmse']:.2f} (n={metrics['n']})",
    )
    _save(figure, out / "scatter.png")

    matrix = confusion_matrix(pred_class, severity_labels(true, classes), len(classes))
    figure, axis = plt.subplots(figsize=(5, 4.5), dpi=120)
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(j, i, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    axis.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted class",
        ylabel="true class",
        title=f"severity accuracy {metrics['severity_accuracy']:.3f}",
    )
    _save(figure, out / "confusion.png")

    rows = "\n".join(f"{t:.1f},{p:.3f},{names[int(c)]}" for t, p, c in zip(true, pred, pred_class))
    (out / "predictions.csv").write_text("true_score,predicted_score,predicted_class\n" + rows + "\n", encoding="utf-8")
    lines = [f"# {title}", "", "| metric | value | 95 % CI |", "|---|---|---|"]
    for key, value in metrics.items():
        if key.endswith("_ci") or isinstance(value, (dict, list)):
            continue
        ci = metrics.get(f"{key}_ci")
        lines.append(f"| {key} | {value} | {f'{ci[0]} – {ci[1]}' if ci else ''} |")
    game = metrics.get("cam_pointing_game")
    if game:
        lines.append(
            f"| heatmap pointing game (peak on a damaged joint) | {game['hit_rate']} ({game['images']} images) | |"
        )
    if metrics.get("agreement"):
        from .agreement import agreement_markdown

        lines += ["", "## The model beside the readers (the same images)", "", agreement_markdown(metrics["agreement"])]
    lines += [
        "",
        "![predicted vs true](scatter.png)",
        "",
        "![severity confusion matrix](confusion.png)",
        "",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
