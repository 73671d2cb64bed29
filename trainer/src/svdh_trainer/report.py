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


def _with_ci(figures: dict, key: str, digits: int = 3) -> str:
    value = figures.get(key)
    if value is None:
        return ""
    ci = figures.get(f"{key}_ci")
    return f"{value:.{digits}f}" + (f" ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})" if ci else "")


def per_area_markdown(metrics: dict) -> list[str]:
    """Sections for layouts, the score beside the sum of the areas, the areas and the intervals."""
    lines: list[str] = []
    layouts = metrics.get("by_layout")
    if layouts:
        lines += ["", "## By layout", "", "| images | n | PCC (95 % CI) | RMSE (95 % CI) |", "|---|---|---|---|"]
        for name, figures in layouts.items():
            lines.append(
                f"| {name.replace('_', ' ')} | {figures['n']} | {_with_ci(figures, 'pcc')} | "
                f"{_with_ci(figures, 'rmse', 2)} |"
            )
    both = metrics.get("score_vs_areas_sum")
    if both:
        lines += [
            "",
            "## The score and the sum of the areas",
            "",
            "The score is the model's total (its score head); the joint head grades the areas. On these images:",
            "",
            "| | value |",
            "|---|---|",
            *(f"| {key.replace('_', ' ')} | {value} |" for key, value in both.items()),
        ]
    areas = metrics.get("areas")
    if areas:
        rows = [
            ("per-area MAE vs labels (grade points)", "mae_vs_reference"),
            ("per-area MAE vs exact grades", "mae_vs_exact"),
            ("pooled per-area κ vs labels", "kappa_vs_reference"),
            ("pooled per-area κ vs exact grades", "kappa_vs_exact"),
            ("weighted per-area RMSE vs labels", "weighted_rmse_vs_reference"),
            ("weighted per-area RMSE vs exact grades", "weighted_rmse_vs_exact"),
            ("joint location error, median (mm)", "joint_error_median_mm"),
            ("joint location error, 90th percentile (mm)", "joint_error_p90_mm"),
            ("hands seen exactly right", "hands_accuracy"),
        ]
        lines += ["", f"## Areas ({areas['images']} images)", "", "| figure | value (95 % CI) |", "|---|---|"]
        lines += [f"| {label} | {_with_ci(areas, key)} |" for label, key in rows if key in areas]
        table = areas.get("per_area", [])
        if table:
            exact = "mae_vs_exact" in table[0]
            lines += [
                "",
                "| area | kind | MAE | κ |" + (" MAE vs exact |" if exact else "") + " location error (mm) |",
                "|---|---|---|---|" + ("---|" if exact else "") + "---|",
            ]
            for row in table:
                lines.append(
                    f"| {row['area']} | {row['kind']} | {row['mae']} | {row['kappa']} |"
                    + (f" {row['mae_vs_exact']} |" if exact else "")
                    + f" {row.get('joint_error_median_mm', '')} |"
                )
    intervals = metrics.get("intervals")
    if intervals:
        lines += ["", "## Prediction intervals", "", "| target | level | n | coverage (95 % CI) | mean width |"]
        lines.append("|---|---|---|---|---|")
        for target, figures in intervals.items():
            lines.append(
                f"| {target} | {figures['level']:.0%} | {figures['n']} | {_with_ci(figures, 'coverage')} | "
                f"{figures['mean_width']:.2f} |"
            )
    return lines + change_markdown(metrics.get("change")) + change_markdown(metrics.get("change_paired"))


def change_markdown(change: dict | None) -> list[str]:
    """The section on change between visits (longitudinal sets)."""
    if not change:
        return []
    lines = [
        "",
        f"## Change between visits ({change['route']} route; {change['patients']} patients, "
        f"{change['visit_pairs']} visit pairs, {change['retest_pairs']} filmed twice; truth: {change['truth']})",
        "",
        "| figure | model (95 % CI) | readers' mean |",
        "|---|---|---|",
    ]
    readers = change.get("readers", {})
    mean = readers.get("mean", {})
    rows = [
        ("change PCC", "pcc", mean.get("pcc")),
        ("change RMSE", "rmse", mean.get("rmse")),
        ("mean change - true change", "bias", None),
        (f"AUC, true change >= {change['progressor_threshold']:g}", "auc", mean.get("auc")),
        ("SDC (Bruynesteijn, retests; readers: A vs B, k = 2)", "sdc", readers.get("sdc_readers_mean")),
        ("false progression on retests (change > threshold)", "false_progression", None),
    ]
    for label, key, theirs in rows:
        if key in change and change[key] is not None:
            lines.append(f"| {label} | {_with_ci(change, key)} | {'' if theirs is None else f'{theirs:.3f}'} |")
    if change.get("progression_threshold") is not None:
        lines += ["", f"A change above {change['progression_threshold']:.2f} is flagged as progression (no-change level "
                  f"plus SDC, from {change['progression_threshold_from']}); the mean change between two films of one "
                  f"day here: {change['zero_level']:.2f}."]  # fmt: skip
    if "interval" in change:
        figures = change["interval"]
        lines.append(f"Change intervals: {figures['coverage']:.1%} coverage at {figures['level']:.0%}, "
                     f"mean width {figures['mean_width']:.2f}.")  # fmt: skip
    return lines


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
    lines += per_area_markdown(metrics)
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
