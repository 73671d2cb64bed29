"""``svdh-train``: make phantoms, fit models, evaluate bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from svdh_runtime.cli_support import err, run_app

if TYPE_CHECKING:
    from .config import TrainConfig

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Train svdh models.")


def _bar(iterable, total: int | None = None, desc: str = ""):  # noqa: ANN001, ANN202
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None)  # no bar when not a terminal


@app.command()
def phantom(
    out: Annotated[Path, typer.Argument(help="Folder to write images/, labels.csv, joints.json.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of phantom patients.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same dataset.")] = 0,
    layout: Annotated[
        str,
        typer.Option(
            help="both: both hands in one image; single: one image per hand; mixed: half the patients each way (RA2-DREAM gives one hand per file)."
        ),
    ] = "both",
    acquisition: Annotated[str, typer.Option(help="Acquisition preset: default or shifted.")] = "default",
    workers: Annotated[int, typer.Option(min=0, help="Processes (0: all cores).")] = 0,
    realism: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="2: people, clinics and two readers (labels.csv holds the readers' mean; truth.csv, readers.csv). "
            "1: the clean phantoms of version 1, byte for byte.",
        ),
    ] = 2,
    visits: Annotated[
        int,
        typer.Option(
            min=1,
            help="Film every patient at this many visits (images/<Patient_ID>-V<k>.dcm; labels.csv gains Visit, "
            "Retest, Years_From_Baseline). Damage only grows between visits.",
        ),
    ] = 1,
    interval_years: Annotated[
        float, typer.Option(min=0.05, help="Years between visits (each visit within about a month of it).")
    ] = 1.0,
    retest: Annotated[
        bool,
        typer.Option(
            "--retest", help="Film every visit twice on the same day (-V<k>-R1): the same grades, for test-retest."
        ),
    ] = False,
) -> None:
    """Generate synthetic PA hand radiographs (DICOM) with known per-joint SvdH grades."""
    from .phantom.generate import ACQUISITION_PRESETS, LAYOUTS, generate
    from .phantom.longitudinal import Schedule

    schedule = Schedule(visits, interval_years, retest) if visits > 1 or retest else None
    if schedule is not None and realism != 2:
        raise typer.BadParameter("longitudinal phantoms (--visits, --retest) need --realism 2", param_hint="--realism")
    if layout not in LAYOUTS:
        raise typer.BadParameter(f"choose one of {', '.join(LAYOUTS)}", param_hint="--layout")
    if acquisition not in ACQUISITION_PRESETS:
        raise typer.BadParameter(f"choose one of {', '.join(ACQUISITION_PRESETS)}", param_hint="--acquisition")
    labels = generate(
        out,
        n,
        seed,
        layout=layout,
        preset=acquisition,
        workers=workers or None,
        progress=lambda it: _bar(it, total=n, desc="phantoms"),
        realism=realism,
        schedule=schedule,
    )
    tables = f"{labels.name}, truth.csv, readers.csv" if realism > 1 else labels.name
    sittings = "" if schedule is None else f", {visits} visit(s){' with retests' if retest else ''} each"
    err(f"wrote {n} phantom patients{sittings} (realism {realism}) to {out} ({tables}, joints.json, images/)")


@app.command()
def fit(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe (see recipes/).")],
    epochs: Annotated[Optional[int], typer.Option(help="Override [train] epochs.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Override [output] dir.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch (output dir/last, state).")
    ] = False,
) -> None:
    """Train a model as the RECIPE describes; writes checkpoints (safetensors + JSON) and history.

    For several GPUs or machines, launch with torchrun, e.g.
    ``torchrun --nproc_per_node 4 --no-python svdh-train fit RECIPE``.
    """
    from .config import load_config
    from .fit import fit as run_fit

    run_fit(_override(load_config(recipe), epochs, out), log=err, resume=resume)


@app.command()
def cv(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe (see recipes/).")],
    folds: Annotated[int, typer.Option(min=2, help="Number of folds (split by patient).")] = 5,
    epochs: Annotated[Optional[int], typer.Option(help="Override [train] epochs.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Override [output] dir.")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for 95 % confidence intervals.")] = 1000,
) -> None:
    """k-fold cross-validation by patient: fold-<k>/ runs, oof.csv (out-of-fold predictions), cv_metrics.json."""
    from .config import load_config
    from .cv import cross_validate

    config = _override(load_config(recipe), epochs, out)
    metrics = cross_validate(config, folds, log=err, bootstrap=bootstrap)
    err(
        f"out of fold ({folds} folds): PCC {metrics['pcc']:.4f} {_ci(metrics, 'pcc')}  "
        f"RMSE {metrics['rmse']:.2f} {_ci(metrics, 'rmse')}  severity accuracy {metrics['severity_accuracy']:.3f}; "
        f"wrote {Path(config.output.dir) / 'oof.csv'}"
    )


@app.command()
def ensemble(
    recipe: Annotated[Path, typer.Argument(help="Ensemble recipe (TOML: [ensemble] and [[members]]).")],
) -> None:
    """Combine trained members by averaging or ridge stacking on out-of-fold predictions; writes ensemble.json."""
    from .ensemble import build_ensemble

    out = build_ensemble(recipe, log=err)
    err(f"export it as one bundle with: svdh-export onnx {out} --out <bundle>")


def _ci(metrics: dict, key: str) -> str:
    low_high = metrics.get(f"{key}_ci")
    return f"({low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""


def _override(config: TrainConfig, epochs: Optional[int], out: Optional[Path]) -> TrainConfig:
    """The recipe with command-line overrides applied."""
    import dataclasses

    if epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    if out is not None:
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, dir=str(out)))
    return config


@app.command()
def evaluate(
    data: Annotated[
        Path, typer.Argument(help="Labelled dataset: RA2-DREAM-layout folder or CSV manifest (see README, Datasets).")
    ],
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle (default: the shipped one).")] = None,
    record: Annotated[
        Optional[str], typer.Option(help="Also store the metrics in the bundle manifest under this key.")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for 95 % confidence intervals (0: none).")
    ] = 1000,
    report: Annotated[
        Optional[Path], typer.Option(help="Write report.md, scatter.png and confusion.png into this folder.")
    ] = None,
    ignore_gate: Annotated[
        bool,
        typer.Option(
            "--ignore-gate",
            help="Score images the input gate would turn away too (to measure the model itself on shifted data; "
            "the JSON still counts how many the gate would reject, as gate_would_reject).",
        ),
    ] = False,
) -> None:
    """Score DATA through the runtime; print score and severity metrics with 95 % bootstrap CIs as JSON."""
    from .evaluate import evaluate_bundle, record_metrics

    metrics = evaluate_bundle(
        model,
        data,
        progress=lambda it: _bar(it, desc="evaluate"),
        bootstrap=bootstrap,
        report_dir=report,
        ignore_gate=ignore_gate,
    )
    metrics["data"] = str(data)
    print(json.dumps(metrics, indent=2))
    if record:
        if model is None:
            raise typer.BadParameter("--record needs --model", param_hint="--record")
        record_metrics(model, record, metrics)


@app.command()
def calibrate(
    data: Annotated[
        Path,
        typer.Argument(help="Labelled images the model never saw (RA2-DREAM-layout folder or CSV manifest)."),
    ],
    model: Annotated[Path, typer.Option("--model", "-m", help="Bundle to calibrate (its manifest is updated).")],
    level: Annotated[
        float, typer.Option(min=0.5, max=0.99, help="The interval level the runtime reports by default.")
    ] = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the split of the patients into the two halves.")] = 0,
) -> None:
    """Fit the bundle's conformal prediction intervals (the total, and with per-area outputs the erosion and
    narrowing sums and each hand's total) on DATA; record them in its manifest."""
    from .calibrate import calibrate_bundle

    record = calibrate_bundle(model, data, level, seed, progress=lambda it: _bar(it, desc="calibrate"))
    print(json.dumps(record, indent=2))


@app.command("fit-change")
def fit_change_command(
    data: Annotated[Path, typer.Argument(help="Longitudinal phantom folder (svdh-train phantom --visits K --retest).")],
    start: Annotated[
        Path, typer.Option("--from", help="Single-film checkpoint with a joint head to start the backbone from.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (best/, last/, state/, history.jsonl).")],
    epochs: Annotated[int, typer.Option(min=1, help="Epochs.")] = 6,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 24,
    tune_last_stage: Annotated[
        bool, typer.Option("--tune-last-stage", help="Also train the backbone's last stage (slower).")
    ] = False,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the change head (backbone: a tenth).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the validation split and the pairs drawn.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
) -> None:
    """Train the paired network (baseline and follow-up side by side -> the change of every area); export it
    into a bundle with `svdh-export add-change`."""
    from .paired_fit import fit_change

    best = fit_change(data, start, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                      tune_last_stage=tune_last_stage, progress=lambda it, desc="": _bar(it, desc=desc),
                      log=err)  # fmt: skip
    err(f"best paired checkpoint: {best}")


@app.command("gate-check")
def gate_check(
    hands: Annotated[list[Path], typer.Argument(help="Folders of hand radiographs (e.g. held-out phantoms).")],
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle (default: the shipped one).")] = None,
    record: Annotated[bool, typer.Option(help="Also store the result in the bundle manifest (input_gate).")] = False,
    report: Annotated[Optional[Path], typer.Option(help="Write the table as markdown to this file.")] = None,
) -> None:
    """Measure the bundle's input gate: hand radiographs accepted, non-hand images (pydicom's CT/MR/US test
    files, photographs, noise, a blank film, shapes) rejected; prints a table."""
    from svdh_runtime.bundle import load_bundle

    from .evaluate import record_metrics
    from .gate_check import check_gate, gate_table, hand_images, non_hand_images

    bundle = load_bundle(model)
    probes = [*hand_images(hands), *non_hand_images()]
    bar = _bar(range(len(probes)), desc="gate-check")
    check = check_gate(bundle, probes, progress=lambda _: bar.update(1))
    bar.close()
    table = gate_table(check, bundle.manifest.outputs.ood_threshold)
    print("\n".join(table))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("# Input gate\n\n" + "\n".join(table) + "\n", encoding="utf-8")
    if record:
        if model is None:
            raise typer.BadParameter("--record needs --model", param_hint="--record")
        hands_rejected, others_rejected = check.rate(True), check.rate(False)
        record_metrics(
            model,
            "input_gate",
            {
                "hand_radiographs_rejected": list(hands_rejected),
                "non_hand_rejected": list(others_rejected),
                "by_category": {k: list(v) for k, v in check.counts.items()},
                "hand_folders": [str(h) for h in hands],
            },
        )


def main() -> None:
    """Console entry point."""
    run_app(app, "svdh-train")


if __name__ == "__main__":
    main()
