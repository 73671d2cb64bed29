"""Cross-validation by patient, out-of-fold predictions, and the ensemble combiners."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE, run_cli
from svdh_exporter.checkpoint import save_checkpoint
from svdh_exporter.ensemble import read_ensemble
from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, Preprocessing
from svdh_trainer.datasets import DatasetError, Sample, patient_folds
from svdh_trainer.ensemble import build_ensemble
from svdh_trainer.stacking import align_oof, fit_ridge


def test_ridge_recovers_the_meta_learner_weights() -> None:
    rng = np.random.default_rng(0)
    truth = rng.gamma(1.2, 35.0, 400)
    members = np.stack([truth + rng.normal(0, 6, 400), 0.8 * truth + 4 + rng.normal(0, 9, 400)], axis=1)
    target = 0.55 * members[:, 0] + 0.35 * members[:, 1] + 7.0 + rng.normal(0, 0.5, 400)
    weights, bias = fit_ridge(members, target, alpha=1e-6)
    np.testing.assert_allclose(weights, [0.55, 0.35], atol=0.01)
    assert bias == pytest.approx(7.0, abs=0.5)
    shrunk, _ = fit_ridge(members, target, alpha=1e7)
    assert np.abs(shrunk).sum() < np.abs(weights).sum()  # the penalty shrinks the weights


def test_ridge_refuses_too_few_cases() -> None:
    with pytest.raises(DatasetError, match="more cases than members"):
        fit_ridge(np.ones((2, 2)), np.ones(2))


def test_patient_folds_keep_both_hands_of_a_patient_together() -> None:
    samples = [Sample(Path(f"p{i}-{hand}.png"), f"p{i}", float(i)) for i in range(23) for hand in ("LH", "RH")]
    parts = patient_folds(samples, 5, seed=3)
    assert sorted(s.path.name for part in parts for s in part) == sorted(s.path.name for s in samples)
    patients = [{s.patient_id for s in part} for part in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(patients) for b in patients[i + 1 :])
    assert {len(p) for p in patients} <= {4, 5}
    with pytest.raises(DatasetError, match="cannot make 30 folds from 23 patients"):
        patient_folds(samples, 30, seed=0)


def test_cv_predicts_every_image_once_out_of_fold(phantoms: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE.format(train=phantoms, out=tmp_path / "cv"), encoding="utf-8")
    done = run_cli("svdh-train", "cv", str(recipe), "--folds", "2", "--epochs", "1", "--bootstrap", "50")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "out of fold (2 folds): PCC" in done.stderr
    with (tmp_path / "cv" / "oof.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = list(csv.DictReader((phantoms / "labels.csv").open()))
    assert len(rows) == len(labels) == len({r["image"] for r in rows})
    assert {r["fold"] for r in rows} == {"1", "2"}
    for fold in ("1", "2"):  # each fold is a complete fit run with its own checkpoints
        history = json.loads((tmp_path / "cv" / f"fold-{fold}" / "best" / "checkpoint.json").read_text())
        assert history["provenance"]["recipe"]["output"]["dir"].endswith(f"fold-{fold}")
    metrics = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert metrics["images"] == len(rows) and "pcc_ci" in metrics["out_of_fold"]
    assert (tmp_path / "cv" / "report" / "scatter.png").is_file()


def _member(tmp: Path, name: str) -> Path:
    net = SvdhNet(ModelSpec("resnet18", 4))
    return save_checkpoint(
        tmp / name,
        net,
        name=name,
        version="1",
        preprocessing=Preprocessing(height=64, width=80),
        severity_classes=DEFAULT_SEVERITY_CLASSES,
    )


def _oof(path: Path, images: list[str], truth: np.ndarray, pred: np.ndarray) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient_id", "fold", "truth", "prediction", "severity_index"])
        for i, (t, p) in enumerate(zip(truth, pred)):
            writer.writerow([images[i], f"p{i}", i % 3 + 1, t, p, 0])
    return path


def test_ridge_ensemble_from_out_of_fold_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    truth = rng.gamma(1.2, 35.0, 300)
    images = [f"images/{i:04d}.dcm" for i in range(300)]
    good = _oof(tmp_path / "a.csv", images, truth, truth + rng.normal(0, 4, 300))
    poor = _oof(tmp_path / "b.csv", images, truth, truth + rng.normal(0, 20, 300))
    recipe = tmp_path / "ens.toml"
    recipe.write_text(
        f"""
[ensemble]
name = "e"
combiner = "ridge"
alpha = 1.0
out = "{tmp_path / "ens"}"
[[members]]
checkpoint = "{_member(tmp_path, "a")}"
oof = "{good}"
[[members]]
checkpoint = "{_member(tmp_path, "b")}"
oof = "{poor}"
""",
        encoding="utf-8",
    )
    spec = read_ensemble(build_ensemble(recipe, log=lambda _: None))
    weights = [m.weight for m in spec.members]
    assert weights[0] > 0.8 and weights[1] < 0.15  # the better member carries the ensemble
    assert spec.metrics["out_of_fold"]["rmse"] < 4.2
    assert spec.members[0].checkpoint == "../a"  # relative: the folder moves with its members


def test_ensemble_recipe_errors(tmp_path: Path) -> None:
    a, b = _member(tmp_path, "a"), _member(tmp_path, "b")
    recipe = tmp_path / "r.toml"
    cases = {
        f'[ensemble]\ncombiner = "ridge"\n[[members]]\ncheckpoint = "{a}"\n[[members]]\ncheckpoint = "{b}"\n': "needs oof",
        f'[[members]]\ncheckpoint = "{a}"\n': "at least two",
        f'[ensemble]\ncombiner = "max"\n[[members]]\ncheckpoint = "{a}"\n[[members]]\ncheckpoint = "{b}"\n': "combiner",
        f'[members2]\n[[members]]\ncheckpoint = "{a}"\n': "unknown section",
        f'[[members]]\ncheckpoint = "{a}"\n[[members]]\ncheckpoint = "{tmp_path / "nope"}"\n': "not a svdh checkpoint",
    }
    for text, message in cases.items():
        recipe.write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=message):
            build_ensemble(recipe, log=lambda _: None)


def test_out_of_fold_files_must_cover_the_same_images(tmp_path: Path) -> None:
    truth = np.arange(10.0)
    a = _oof(tmp_path / "a.csv", [f"{i}.dcm" for i in range(10)], truth, truth)
    b = _oof(tmp_path / "b.csv", [f"{i}.dcm" for i in range(1, 11)], truth, truth)
    with pytest.raises(DatasetError, match="predicts other images"):
        align_oof([a, b])
    with pytest.raises(DatasetError, match="no such out-of-fold file"):
        align_oof([tmp_path / "missing.csv", a])


def test_cv_then_ridge_stacking_then_one_bundle(phantoms: Path, tmp_path: Path) -> None:
    """The researcher's path: cross-validate two architectures, stack them, export, score."""
    members = {"resnet": ("resnet18", 96, 112), "mobilenet": ("mobilenetv2_050", 72, 84)}  # same aspect ratio
    lines = ["[ensemble]", 'combiner = "ridge"', f'out = "{tmp_path / "stacked"}"']
    for name, (architecture, height, width) in members.items():
        text = TINY_RECIPE.format(train=phantoms, out=tmp_path / name).replace("epochs = 2", "epochs = 1")
        text = text.replace('"resnet18"', f'"{architecture}"').replace("height = 96", f"height = {height}")
        recipe = tmp_path / f"{name}.toml"
        recipe.write_text(text.replace("width = 112", f"width = {width}"), encoding="utf-8")
        for command in (
            ("cv", str(recipe), "--folds", "2", "--bootstrap", "0", "--out", str(tmp_path / f"{name}-cv")),
            ("fit", str(recipe)),
        ):
            done = run_cli("svdh-train", *command)
            assert done.returncode == 0, done.stderr[-2000:]
        lines += [
            "[[members]]",
            f'checkpoint = "{tmp_path / name / "best"}"',
            f'oof = "{tmp_path / f"{name}-cv" / "oof.csv"}"',
        ]
    (tmp_path / "ensemble.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run_cli("svdh-train", "ensemble", str(tmp_path / "ensemble.toml"))
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli("svdh-export", "onnx", str(tmp_path / "stacked"), "--out", str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [m["architecture"] for m in manifest["members"]] == ["resnet18", "mobilenetv2_050"]
    assert manifest["provenance"]["ensemble"]["combiner"] == "ridge"
    assert "out_of_fold" in manifest["metrics"]
    image = sorted((phantoms / "images").glob("*.dcm"))[0]
    done = run_cli("svdh-run", str(image), "--model", str(tmp_path / "bundle"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["status"] == "ok"
