"""Training recipes: TOML files that record everything needed to rerun a fit."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, Preprocessing, SeverityClass, dataclass_from_mapping

from .datasets import DatasetError


@dataclass(frozen=True)
class DataConfig:
    train: str  # dataset folder or CSV (see svdh_trainer.datasets.read_dataset)
    val: str = ""  # separate validation dataset; empty: split train by patient
    val_fraction: float = 0.15
    workers: int = 0  # preprocessing processes (0: all cores)
    format: str = "auto"  # auto, ra2, manifest or bone_age

    def __post_init__(self) -> None:
        from .datasets import DATASET_FORMATS

        if self.format not in DATASET_FORMATS:
            raise ValueError(f"format must be one of {', '.join(DATASET_FORMATS)}, found {self.format!r}")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "mobilenetv2_050"
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.2
    output_stride: int = 32  # 16 or 8: dilated last stage(s), finer Grad-CAM at more compute
    init: str = ""  # starting weights: svdh checkpoint folder or timm .safetensors file (empty: random)
    joint_head: bool = False  # per-hand area grades, joint positions and hands shown (see svdh_trainer.joint_head)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.02
    warmup_epochs: float = 0.5
    severity_loss_weight: float = 0.3
    augment: bool = True
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: all cores)
    finetune: str = "full"  # full, head, two_stage or llrd (see svdh_trainer.finetune)
    head_epochs: int = 1  # two_stage: epochs that train the heads only
    layer_decay: float = 0.75  # llrd: learning-rate factor per layer toward the input
    damage_map_weight: float = 0.0  # > 0: also fit the per-location score to a damage density (needs joints.json)
    area_loss_weight: float = 0.0  # > 0: the areas' grades are learned too (needs per-area grades); with
    # [model] joint_head by the joint head, per hand, else by an auxiliary head summing the hands
    landmark_loss_weight: float = 1.0  # joint_head: weight of the joint-location loss (where joints.json exists)

    def __post_init__(self) -> None:
        from .finetune import SCHEMES

        if self.finetune not in SCHEMES:
            raise ValueError(f"finetune must be one of {', '.join(SCHEMES)}, found {self.finetune!r}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError("layer_decay must be in (0, 1]")
        if self.damage_map_weight < 0:
            raise ValueError("damage_map_weight must be >= 0")
        if self.area_loss_weight < 0:
            raise ValueError("area_loss_weight must be >= 0")
        if self.landmark_loss_weight < 0:
            raise ValueError("landmark_loss_weight must be >= 0")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/model"
    name: str = "svdh-model"
    version: str = "0.1.0"


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    input: Preprocessing = field(default_factory=lambda: Preprocessing(height=320, width=384))
    train: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    severity_classes: tuple[SeverityClass, ...] = DEFAULT_SEVERITY_CLASSES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _section(kind: type, data: Any, name: str) -> Any:
    try:
        return dataclass_from_mapping(kind, data, f"[{name}]")
    except ValueError as exc:
        raise DatasetError(f"recipe: {exc}") from None


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """Build a config; relative data paths are taken relative to ``base_dir``."""
    unknown = sorted(set(data) - {"data", "model", "input", "train", "output", "severity_classes"})
    if unknown:
        raise DatasetError(f"recipe: unknown section(s): {', '.join(unknown)}")
    if "data" not in data:
        raise DatasetError("recipe: missing [data] with train = <folder>")
    data_cfg = _section(DataConfig, data["data"], "data")
    if base_dir is not None:
        resolve = lambda p: str((base_dir / p).resolve()) if p and not Path(p).is_absolute() else p  # noqa: E731
        data_cfg = dataclasses.replace(data_cfg, train=resolve(data_cfg.train), val=resolve(data_cfg.val))
    classes = DEFAULT_SEVERITY_CLASSES
    if "severity_classes" in data:
        classes = tuple(_section(SeverityClass, c, "severity_classes") for c in data["severity_classes"])
    return TrainConfig(
        data=data_cfg,
        model=_section(ModelConfig, data.get("model", {}), "model"),
        input=_section(Preprocessing, data.get("input", {"height": 320, "width": 384}), "input"),
        train=_section(OptimConfig, data.get("train", {}), "train"),
        output=_section(OutputConfig, data.get("output", {}), "output"),
        severity_classes=classes,
    )


def read_recipe_toml(path: Path) -> dict[str, Any]:
    """The raw tables of a TOML recipe file (fit or ensemble); one-line errors."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable TOML recipe ({exc})") from None


def load_config(path: Path) -> TrainConfig:
    """Read a TOML recipe; data paths are relative to the current directory."""
    return config_from_dict(read_recipe_toml(path))
