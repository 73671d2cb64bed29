"""Everything besides the weights that a fit needs to resume exactly where it stopped.

Saved after every epoch into ``<run>/state/``: the optimiser's tensors in
``state.safetensors``, the counters and schedule in ``state.json`` (with the
sha256 of the tensor file). Random streams need no saving: :mod:`.fit` seeds
them from (seed, epoch, rank) at the start of every epoch. Nothing is pickled,
so resuming never executes code from a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from svdh_runtime.bundle import sha256_file
from svdh_runtime.files import atomic_write_text

from .datasets import DatasetError

STATE_DIR = "state"
TENSORS = "state.safetensors"
META = "state.json"


@dataclass
class TrainingState:
    epoch: int  # epochs completed
    best_rmse: float
    optimiser: dict[str, Any]  # torch optimiser state_dict
    schedule: dict[str, Any]  # LambdaLR state_dict without the lambdas
    last_weights_sha256: str  # the <run>/last checkpoint this state belongs to


def save_training_state(run: Path, state: TrainingState) -> None:
    """Write the state atomically (tensors first, then the JSON that names their checksum)."""
    from safetensors.torch import save_file

    directory = Path(run) / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    slots: dict[str, dict[str, Any]] = {}
    for index, values in state.optimiser["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimiser.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                slots.setdefault(str(index), {})[key] = value
    partial = directory / (TENSORS + ".partial")
    save_file(tensors or {"empty": torch.zeros(0)}, str(partial))
    partial.replace(directory / TENSORS)
    meta = {
        "epoch": state.epoch,
        "best_rmse": state.best_rmse,
        "param_groups": state.optimiser["param_groups"],
        "optimiser_scalars": slots,
        "schedule": {k: v for k, v in state.schedule.items() if k != "lr_lambdas"},
        "tensors_sha256": sha256_file(directory / TENSORS),
        "last_weights_sha256": state.last_weights_sha256,
    }
    atomic_write_text(directory / META, json.dumps(meta, indent=2) + "\n")


def load_training_state(run: Path) -> TrainingState:
    """Read the state saved by :func:`save_training_state` (checksum verified)."""
    from safetensors.torch import load_file

    directory = Path(run) / STATE_DIR
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{run}: nothing to resume (no {STATE_DIR}/{META}); start without --resume") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{directory / META}: unreadable training state ({exc})") from None
    tensors_path = directory / TENSORS
    if not tensors_path.is_file() or sha256_file(tensors_path) != meta.get("tensors_sha256"):
        raise DatasetError(f"{tensors_path}: missing or does not match {META}; the training state is damaged")
    tensors = load_file(str(tensors_path))
    optimiser_state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimiser."):  # "optimiser.<param index>.<slot>"
            _, index, key = name.split(".", 2)
            optimiser_state.setdefault(int(index), {})[key] = value
    for index, values in meta["optimiser_scalars"].items():
        optimiser_state.setdefault(int(index), {}).update(values)
    return TrainingState(
        epoch=int(meta["epoch"]),
        best_rmse=float(meta["best_rmse"]),
        optimiser={"state": optimiser_state, "param_groups": meta["param_groups"]},
        schedule=meta["schedule"],
        last_weights_sha256=str(meta.get("last_weights_sha256", "")),
    )
