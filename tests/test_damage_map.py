"""Damage-map supervision: the per-location score head fitted to where the damaged joints are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE, run_cli
from svdh_exporter.augment import augment_batch
from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_runtime.manifest import Preprocessing
from svdh_trainer.damage_map import damage_points, local_target, render_damage
from svdh_trainer.datasets import DatasetError, read_phantom_dir

SPEC = Preprocessing(height=96, width=112)


def test_each_damaged_joint_adds_its_grade_where_it_lies() -> None:
    points = [np.array([[30.0, 40.0, 3.0, 2.0], [80.0, 20.0, 3.0, 3.0]], np.float32), np.zeros((0, 4), np.float32)]
    density = render_damage(points, SPEC)
    assert density.shape == (2, 1, 96, 112)
    assert float(density[0].sum()) == pytest.approx(5.0, rel=1e-4)
    assert float(density[1].sum()) == 0.0
    row, col = np.unravel_index(int(density[0, 0].argmax()), (96, 112))
    assert (col, row) in {(80, 20), (79, 19), (80, 19), (79, 20)}  # same width: the grade-3 joint is the denser


def test_local_target_averages_to_the_standardised_score() -> None:
    points = [np.array([[30.0, 40.0, 3.0, 2.0], [110.0, 50.0, 3.0, 4.0]], np.float32)]  # the second half off-canvas
    density = render_damage(points, SPEC)
    totals = torch.tensor([6.0])
    target = local_target(density, totals, (6, 7), score_mean=20.0, score_std=10.0)
    assert target.shape == (1, 6, 7)
    assert float(target.mean()) == pytest.approx((6.0 - 20.0) / 10.0, abs=1e-5)
    empty = local_target(torch.zeros(1, 1, 96, 112), torch.tensor([0.0]), (6, 7), 20.0, 10.0)
    assert torch.allclose(empty, torch.full_like(empty, -2.0))


def test_augmentation_moves_the_damage_map_with_the_image() -> None:
    image = torch.full((4, 1, 96, 112), -1.0)
    image[:, :, 30:34, 60:64] = 2.0
    companion = torch.zeros(4, 1, 96, 112)
    companion[:, :, 30:34, 60:64] = 1.0
    augmented = augment_batch(image, SPEC, torch.Generator().manual_seed(3), companion)
    moved, moved_map = augmented.images, augmented.companion
    for a, b in zip(moved[:, 0], moved_map[:, 0]):
        ya, xa = np.unravel_index(int((a - a.median()).abs().argmax()), a.shape)
        yb, xb = np.unravel_index(int(b.argmax()), b.shape)
        assert abs(int(ya) - int(yb)) <= 3 and abs(int(xa) - int(xb)) <= 3


def test_per_location_scores_pool_to_the_score() -> None:
    torch.manual_seed(0)
    net = SvdhNet(ModelSpec("resnet10t", 4, score_mean=30.0, score_std=25.0, output_stride=16)).eval()
    image = torch.randn(2, 1, 96, 112)
    with torch.no_grad():
        score, _, local = net(image, local=True)
    assert local.shape == (2, 6, 7)
    torch.testing.assert_close(local.mean(dim=(1, 2)), (score - 30.0) / 25.0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="linear score head"):
        SvdhNet(ModelSpec("resnet10t", 4, head="mlp"))(image, local=True)


def test_damage_points_lie_on_the_canvas(phantoms: Path) -> None:
    samples = read_phantom_dir(phantoms)
    points = damage_points(samples, SPEC)
    sites = json.loads((phantoms / "joints.json").read_text())
    for sample, joints in zip(samples, points):
        record = sites[sample.path.relative_to(phantoms).as_posix()]
        assert len(joints) == sum(j["grade"] > 0 for j in record["joints"])
        assert float(joints[:, 3].sum()) == pytest.approx(sample.score)
        assert np.all(
            (joints[:, 0] >= 0) & (joints[:, 0] <= SPEC.width) & (joints[:, 1] >= 0) & (joints[:, 1] <= SPEC.height)
        )


def test_fit_with_damage_map(phantoms: Path, tmp_path: Path) -> None:
    text = TINY_RECIPE.format(train=phantoms, out=tmp_path / "run").replace('head = "mlp"', 'head = "linear"')
    recipe = tmp_path / "dm.toml"
    recipe.write_text(
        text.replace("lr = 1e-3", "lr = 1e-3\ndamage_map_weight = 0.2").replace("epochs = 2", "epochs = 1")
    )
    done = run_cli("svdh-train", "fit", str(recipe))
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "best" / "checkpoint.json").read_text())
    assert saved["provenance"]["recipe"]["train"]["damage_map_weight"] == 0.2

    bare = tmp_path / "bare"  # the same images without joint positions
    shutil.copytree(phantoms, bare, ignore=shutil.ignore_patterns("joints.json", ".svdh-cache"))
    recipe.write_text(recipe.read_text().replace(str(phantoms), str(bare)))
    done = run_cli("svdh-train", "fit", str(recipe))
    assert done.returncode == 2 and "needs joint positions (joints.json)" in done.stderr, done.stderr[-1500:]
    with pytest.raises(DatasetError, match="needs joint positions"):
        damage_points(read_phantom_dir(bare), SPEC)
