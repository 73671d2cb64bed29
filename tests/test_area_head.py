"""Per-area auxiliary head: targets from per-area grades, which parameters it adds, and a fit that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE, run_cli
from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_runtime.areas import AREAS, grade_columns
from svdh_trainer.area_head import area_loss, area_targets
from svdh_trainer.datasets import DatasetError, Sample, read_dataset, read_phantom_dir
from svdh_trainer.finetune import set_trainable
from svdh_trainer.phantom.generate import generate


def _sample(grades: dict[str, list[float]] | None) -> Sample:
    if grades is None:
        return Sample(Path("x.png"), "p", 0.0)
    row = tuple(g for hand in ("LH", "RH") for g in grades.get(hand, [float("nan")] * len(AREAS)))
    return Sample(Path("x.dcm"), "p", float(np.nansum(row)), row)


def test_targets_sum_the_hands_shown_as_fractions_of_their_maximum() -> None:
    left = [5.0] * 16 + [4.0] * 15  # every area at its maximum
    right = [0.0] * 31
    both, single = area_targets([_sample({"LH": left, "RH": right}), _sample({"LH": left})])
    np.testing.assert_allclose(both, 0.5)  # one hand of two at the maximum
    np.testing.assert_allclose(single, 1.0)  # the only hand shown at the maximum
    with pytest.raises(DatasetError, match="needs per-area grades"):
        area_targets([_sample(None)])


def test_phantom_readers_carry_per_area_grades(phantoms: Path, tmp_path: Path) -> None:
    import csv

    labels = {row["Patient_ID"]: row for row in csv.DictReader((phantoms / "labels.csv").open())}
    sample = read_phantom_dir(phantoms)[0]
    assert sample.area_grades == tuple(float(labels[sample.patient_id][c]) for c in grade_columns())
    assert sum(sample.area_grades) == sample.score

    generate(tmp_path, 2, 5, layout="single", workers=1)
    singles = read_dataset(tmp_path)
    for one in singles:
        hand = one.path.stem[-2:]
        shown = [g for c, g in zip(grade_columns(), one.area_grades) if c.startswith(hand)]
        hidden = [g for c, g in zip(grade_columns(), one.area_grades) if not c.startswith(hand)]
        assert np.all(np.isfinite(shown)) and np.all(np.isnan(hidden)) and sum(shown) == one.score


def test_area_head_is_a_head_and_learns_with_the_backbone() -> None:
    torch.manual_seed(0)
    net = SvdhNet(ModelSpec("resnet10t", 4, area_outputs=31))
    set_trainable(net, "head", epoch=1, head_epochs=1)
    assert all(p.requires_grad for p in net.area_head.parameters())
    assert not any(p.requires_grad for p in net.backbone.parameters())
    set_trainable(net, "full", epoch=1, head_epochs=1)
    score, logits, areas = net(torch.randn(2, 1, 64, 80), areas=True)
    assert areas.shape == (2, 31)
    area_loss(areas, np.full((2, 31), 0.3, np.float32)).backward()
    assert net.area_head.weight.grad.abs().sum() > 0
    assert sum(float(p.grad.abs().sum()) for p in net.backbone.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="no per-area head"):
        SvdhNet(ModelSpec("resnet10t", 4))(torch.randn(1, 1, 64, 80), areas=True)


def test_fit_with_area_head_records_its_error_and_exports(phantoms: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "areas.toml"
    text = TINY_RECIPE.format(train=phantoms, out=tmp_path / "run").replace("epochs = 2", "epochs = 1")
    recipe.write_text(text.replace("lr = 1e-3", "lr = 1e-3\narea_loss_weight = 1.0"))
    done = run_cli("svdh-train", "fit", str(recipe))
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "best" / "checkpoint.json").read_text())
    assert saved["model"]["area_outputs"] == 31
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert 0.0 <= history[-1]["area_mae"] <= 5.0
    exported = run_cli("svdh-export", "onnx", str(tmp_path / "run" / "best"), "--out", str(tmp_path / "bundle"))
    assert exported.returncode == 0, exported.stderr[-2000:]


def test_area_head_needs_per_area_grades(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / f"{name}.png").write_bytes(b"")  # never read: the recipe is refused first
    (tmp_path / "data.csv").write_text("path,score\n" + "".join(f"{name}.png,3\n" for name in "abcd"))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        TINY_RECIPE.format(train=tmp_path / "data.csv", out=tmp_path / "run").replace(
            "lr = 1e-3", "lr = 1e-3\narea_loss_weight = 1.0"
        )
    )
    done = run_cli("svdh-train", "fit", str(recipe))
    assert done.returncode == 2 and "needs per-area grades" in done.stderr, done.stderr[-1500:]
