"""The plain CSV manifest and RSNA bone-age readers, and format detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svdh_trainer.datasets import DatasetError, read_bone_age, read_dataset, read_manifest_csv


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random((80, 64)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_manifest_reads_paths_scores_and_patients(tmp_path: Path) -> None:
    for name in ("p1-LH", "p1-RH", "p2"):
        _png(tmp_path / "img" / f"{name}.png", len(name))
    csv = tmp_path / "train.csv"
    csv.write_text("path,score,LH_mcp_E__1\nimg/p1-LH.png,12,1\nimg/p1-RH.png,3.5,0\nimg/p2.png,0,0\n")
    samples = read_dataset(csv)
    assert [(s.path.name, s.patient_id, s.score) for s in samples] == [
        ("p1-LH.png", "p1", 12.0),
        ("p1-RH.png", "p1", 3.5),
        ("p2.png", "p2", 0.0),
    ]
    csv.write_text("path,score,patient_id\nimg/p1-LH.png,12,A\nimg/p2.png,1,A\n")
    assert {s.patient_id for s in read_manifest_csv(csv)} == {"A"}


@pytest.mark.parametrize(
    "body, message",
    [
        ("path,total\nimg/a.png,1\n", "missing column"),
        ("path,score\nimg/missing.png,1\n", "not found"),
        ("path,score\nimg/a.png,many\n", "not a number"),
        ("path,score\nimg/a.png,300\n", "outside 0-280"),
        ("path,score\nimg/a.png,nan\n", "not a finite number"),
        ("path,score\n", "no rows"),
    ],
)
def test_malformed_manifest_is_refused_with_its_line(tmp_path: Path, body: str, message: str) -> None:
    _png(tmp_path / "img" / "a.png", 0)
    csv = tmp_path / "m.csv"
    csv.write_text(body)
    with pytest.raises(DatasetError, match=message):
        read_manifest_csv(csv)


def test_bone_age_layout(tmp_path: Path) -> None:
    csv = tmp_path / "boneage-training-dataset.csv"
    csv.write_text("id,boneage,male\n1377,180,False\n1378,12,True\n")
    _png(tmp_path / "boneage-training-dataset" / "1377.png", 1)
    _png(tmp_path / "boneage-training-dataset" / "1378.png", 2)
    for where in (csv, tmp_path):
        samples = read_dataset(where)
        assert [(s.path.name, s.patient_id, s.score) for s in samples] == [
            ("1377.png", "1377", 180.0),
            ("1378.png", "1378", 12.0),
        ]


@pytest.mark.parametrize(
    "body, message",
    [
        ("id,boneage\n1,10\n", "missing column"),
        ("id,boneage,male\n1,-3,True\n", "outside 0-240"),
        ("id,boneage,male\n1,ten,True\n", "not a number"),
        ("id,boneage,male\n1,10,maybe\n", "male must be True or False"),
        ("id,boneage,male\n2,10,True\n", "no 2.png"),
        ("id,boneage,male\n,10,True\n", "empty id"),
    ],
)
def test_malformed_bone_age_csv_is_refused(tmp_path: Path, body: str, message: str) -> None:
    _png(tmp_path / "images" / "1.png", 1)
    csv = tmp_path / "ages.csv"
    csv.write_text(body)
    with pytest.raises(DatasetError, match=message):
        read_bone_age(csv)


def test_unknown_layouts_are_named(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="neither path,score"):
        read_dataset(tmp_path / "x.csv")
    with pytest.raises(DatasetError, match="no labels.csv"):
        read_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset"):
        read_dataset(tmp_path / "absent")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_dataset(tmp_path, "xml")


def test_phantom_folder_is_detected(phantoms: Path) -> None:
    samples = read_dataset(phantoms)
    assert len(samples) == 16 and all(s.path.suffix == ".dcm" for s in samples)


def test_bone_age_pretraining_then_fine_tuning(phantoms: Path, tmp_path: Path) -> None:
    """Pretrain on an RSNA-layout set, then start a phantom fit from that checkpoint."""
    from conftest import TINY_RECIPE, run_cli

    rows = ["id,boneage,male"]
    for i in range(12):
        _png(tmp_path / "ages" / "images" / f"{100 + i}.png", i)
        rows.append(f"{100 + i},{12 + 15 * i},{i % 2 == 0}")
    (tmp_path / "ages" / "ages.csv").write_text("\n".join(rows) + "\n")
    pretrain = tmp_path / "pretrain.toml"
    text = TINY_RECIPE.format(train=tmp_path / "ages", out=tmp_path / "pre").replace("epochs = 2", "epochs = 1")
    pretrain.write_text(text.replace("lr = 1e-3", "lr = 1e-3\nseverity_loss_weight = 0.0"))
    done = run_cli("svdh-train", "fit", str(pretrain))
    assert done.returncode == 0, done.stderr[-2000:]
    finetune = tmp_path / "finetune.toml"
    text = TINY_RECIPE.format(train=phantoms, out=tmp_path / "ft").replace("epochs = 2", "epochs = 1")
    finetune.write_text(text.replace("hidden = 32", f'hidden = 32\ninit = "{tmp_path / "pre" / "best"}"'))
    done = run_cli("svdh-train", "fit", str(finetune))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting from svdh checkpoint tiny-test-model" in done.stderr
