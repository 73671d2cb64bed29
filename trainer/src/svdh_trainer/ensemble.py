"""``svdh-train ensemble``: combine trained members (averaging or ridge stacking) into an ensemble folder.

An ensemble recipe (TOML)::

    [ensemble]
    name = "svdh-ensemble"
    version = "0.1.0"
    combiner = "ridge"        # "mean": equal weights; "ridge": stacking on out-of-fold predictions
    alpha = 1.0               # ridge penalty
    out = "runs/ensemble"

    [[members]]
    checkpoint = "runs/resnet/best"    # the member as exported (e.g. trained on all training data)
    oof = "runs/resnet-cv/oof.csv"     # its recipe's out-of-fold predictions (svdh-train cv); ridge only

``svdh-export onnx <out>`` then writes the whole ensemble as one bundle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdh_exporter.checkpoint import read_checkpoint_info
from svdh_exporter.ensemble import EnsembleSpec, MemberRef, check_members, write_ensemble
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import dataclass_from_mapping

from .config import read_recipe_toml
from .datasets import DatasetError
from .metrics import evaluate_predictions, severity_labels
from .stacking import align_oof, fit_ridge


@dataclass(frozen=True)
class EnsembleRecipe:
    name: str = "svdh-ensemble"
    version: str = "0.1.0"
    combiner: str = "mean"
    alpha: float = 1.0
    out: str = "runs/ensemble"


@dataclass(frozen=True)
class MemberRecipe:
    checkpoint: str
    oof: str = ""


def load_ensemble_recipe(path: Path) -> tuple[EnsembleRecipe, list[MemberRecipe]]:
    """Read an ensemble recipe; clear errors for unknown keys and missing members."""
    raw = read_recipe_toml(path)
    unknown = sorted(set(raw) - {"ensemble", "members"})
    if unknown:
        raise DatasetError(f"{path}: unknown section(s): {', '.join(unknown)}")
    try:
        recipe = dataclass_from_mapping(EnsembleRecipe, raw.get("ensemble", {}), "[ensemble]")
        members = [dataclass_from_mapping(MemberRecipe, m, "[[members]]") for m in raw.get("members", [])]
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if recipe.combiner not in ("mean", "ridge"):
        raise DatasetError(f"{path}: combiner must be 'mean' or 'ridge', found {recipe.combiner!r}")
    if len(members) < 2:
        raise DatasetError(f"{path}: an ensemble needs at least two [[members]]")
    if recipe.combiner == "ridge" and not all(m.oof for m in members):
        raise DatasetError(f"{path}: combiner 'ridge' needs oof = <out-of-fold CSV> for every member")
    return recipe, members


def build_ensemble(recipe_path: Path, log: Callable[[str], None] = print) -> Path:
    """Fit the combiner and write ``ensemble.json``; returns the ensemble folder."""
    recipe, members = load_ensemble_recipe(recipe_path)
    out = Path(recipe.out)
    infos = []
    for member in members:
        try:
            infos.append(read_checkpoint_info(Path(member.checkpoint)))
        except BundleError as exc:
            raise DatasetError(str(exc)) from None
    metrics: dict = {}
    if all(m.oof for m in members):
        predictions, truth = align_oof([Path(m.oof) for m in members])
        for member, column in zip(members, predictions.T):
            log(f"{member.checkpoint}: out-of-fold RMSE {np.sqrt(np.mean((column - truth) ** 2)):.2f}")
    if recipe.combiner == "ridge":
        weights, bias = fit_ridge(predictions, truth, recipe.alpha)
    else:
        weights, bias = np.full(len(members), 1.0 / len(members)), 0.0
    if all(m.oof for m in members):
        combined = predictions @ weights + bias
        classes = infos[0].severity_classes
        metrics["out_of_fold"] = evaluate_predictions(
            combined, truth, severity_labels(combined, classes), classes, bootstrap=1000
        )
        log(
            f"{recipe.combiner} ensemble, out of fold: PCC {metrics['out_of_fold']['pcc']:.4f}  "
            f"RMSE {metrics['out_of_fold']['rmse']:.2f}"
        )
    out.mkdir(parents=True, exist_ok=True)
    refs = tuple(
        MemberRef(
            checkpoint=_relative(Path(m.checkpoint), out), weight=round(float(w), 6), weights_sha256=i.weights_sha256
        )
        for m, w, i in zip(members, weights, infos)
    )
    spec = EnsembleSpec(
        name=recipe.name,
        version=recipe.version,
        combiner=recipe.combiner,
        bias=round(float(bias), 6),
        members=refs,
        metrics=metrics,
        provenance={"ensemble_recipe": Path(recipe_path).read_text(encoding="utf-8")},
    )
    try:
        check_members(out, spec)
    except BundleError as exc:
        raise DatasetError(str(exc)) from None
    write_ensemble(out, spec)
    log(f"weights {[r.weight for r in refs]}, bias {spec.bias}; wrote {out / 'ensemble.json'}")
    return out


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` where possible, so an ensemble folder can move with its members."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())
