"""The paired network: non-negative area changes, its CAM, the exported second graph, and its training."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_per_area_checkpoint, run_cli
from svdh_exporter.checkpoint import load_network
from svdh_exporter.paired import PairedChangeNet, PairedGraph, PairedSpec, load_paired, save_paired
from svdh_exporter.paired_export import add_paired_graph
from svdh_runtime.bundle import load_bundle
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import MANIFEST_NAME, ChangeCalibration, Manifest
from svdh_runtime.paired import PairedGraph as RuntimePairedGraph
from svdh_trainer.paired_fit import fit_change
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.longitudinal import Schedule


@pytest.fixture(scope="module")
def paired_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A paired network on the per-area test network's backbone, its change head drawn at random."""
    work = tmp_path_factory.mktemp("paired")
    backbone, info = load_network(make_per_area_checkpoint(work / "single", (2.0, 2.0)))
    torch.manual_seed(3)
    net = PairedChangeNet(PairedSpec(backbone.spec, hidden=16), backbone).eval()
    with torch.no_grad():
        net.area_bias.fill_(0.5)  # a visible change, so the CAM is not all zero
    save_paired(work / "checkpoint", net, name="paired-test", version="0.0.1", preprocessing=info.preprocessing)
    return work / "checkpoint"


@pytest.fixture(scope="module")
def paired_bundle(tmp_path_factory: pytest.TempPathFactory, per_area_bundle: Path, paired_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("paired-bundle") / "bundle"
    shutil.copytree(per_area_bundle, out)
    add_paired_graph(paired_checkpoint, out, log=lambda _: None)
    return out


def test_changes_are_never_negative_and_the_cam_is_the_gradient_times_activation(paired_checkpoint: Path) -> None:
    net, _ = load_paired(paired_checkpoint)
    before, after = torch.randn(2, 1, 128, 160), torch.randn(2, 1, 128, 160)
    out = net(before, after)
    assert (out.areas >= 0).all() and (out.raw < 0).any()  # the max(0, .) is at work
    assert net(before, before).areas.abs().max() == 0  # the same film twice: exactly no change
    maps = out.maps.detach().requires_grad_(True)
    after_sites = out.attention.detach() @ maps.flatten(2).transpose(1, 2)
    _, before_sites = net._sites(net.net.feature_map(before))
    gelu, softplus = torch.nn.functional.gelu, torch.nn.functional.softplus
    base = before_sites.detach()
    logits = (gelu(net.mix(torch.cat([after_sites - base, base], -1))) * net.area_weight).sum(-1) + net.area_bias
    unchanged = (gelu(net.mix(torch.cat([torch.zeros_like(base), base], -1))) * net.area_weight).sum(-1)
    areas = torch.relu(softplus(logits) - softplus(unchanged + net.area_bias).detach())
    assert torch.allclose(areas, out.areas, atol=1e-5)
    (gradient,) = torch.autograd.grad(areas.sum(), maps)
    expected = (gradient * maps).sum(dim=1)
    got = net.signed_change_cam(out, torch.ones(2, 62))
    assert expected.abs().max() > 0
    assert torch.allclose(got, expected, atol=1e-5 * float(expected.abs().max()))


def test_the_exported_paired_graph_equals_torch(paired_bundle: Path, paired_checkpoint: Path) -> None:
    bundle = load_bundle(paired_bundle)
    assert bundle.manifest.outputs.paired is not None and "change.onnx" in bundle.manifest.files
    net, _ = load_paired(paired_checkpoint)
    graph = PairedGraph(net).eval()
    runtime = RuntimePairedGraph(bundle)
    rng = np.random.default_rng(7)
    for _ in range(3):
        before, after = (rng.standard_normal((128, 160)).astype(np.float32) for _ in range(2))
        got = runtime.change(before, after)
        with torch.no_grad():
            areas, hands, cam = graph(torch.from_numpy(before)[None, None], torch.from_numpy(after)[None, None])
        shown = [c for c, v in got.areas.items() if v is not None]
        assert shown
        expected = {c: float(a) for c, a in zip(got.areas, areas[0])}
        assert max(abs(got.areas[c] - expected[c]) for c in shown) < 1e-3
        assert np.abs(got.cam - cam[0].numpy()).max() < 1e-3 * max(1.0, float(cam.abs().max()))


def test_a_paired_calibration_needs_a_paired_graph(paired_bundle: Path, per_area_bundle: Path) -> None:
    paired = ChangeCalibration(route="paired", sdc=4.0, sdc_pairs=20, base=1.0, per_point=0.0,
                               scores=tuple(np.linspace(0.1, 2.0, 20)))  # fmt: skip
    for bundle, accepted in ((paired_bundle, True), (per_area_bundle, False)):
        data = json.loads(Manifest.read(bundle / MANIFEST_NAME).to_json())
        data["outputs"]["changes"] = [dataclasses.asdict(paired)]
        if accepted:
            assert Manifest.from_dict(data).outputs.change_for("paired") == paired
        else:
            with pytest.raises(BundleError, match="paired route needs a paired graph"):
                Manifest.from_dict(data)


def test_a_bundle_with_other_preprocessing_is_refused(paired_checkpoint: Path, tmp_path: Path) -> None:
    from svdh_runtime.bundle import default_bundle_path

    shutil.copytree(default_bundle_path(), tmp_path / "bundle")
    with pytest.raises(BundleError, match="preprocessing"):
        add_paired_graph(paired_checkpoint, tmp_path / "bundle", log=lambda _: None)


def test_fit_change_trains_resumes_and_progression_uses_the_paired_route(tmp_path: Path, paired_bundle: Path) -> None:
    data = tmp_path / "visits"
    generate(data, 4, 43, layout="both", workers=1, schedule=Schedule(2, 1.0, retest=True))
    start = make_per_area_checkpoint(tmp_path / "single", (2.0, 2.0))
    run = tmp_path / "run"
    fit_change(data, start, run, epochs=1, batch_size=4, val_fraction=0.25, log=lambda _: None)
    best, spec = load_paired(run / "best")
    assert spec["provenance"]["targets"].startswith("exact") and (run / "state").is_dir()
    fit_change(data, start, run, epochs=2, batch_size=4, val_fraction=0.25, resume=True, log=lambda _: None)
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    tuned = tmp_path / "tuned"  # the last stage trained too: it moves, the trunk before it does not
    fit_change(data, start, tuned, epochs=1, batch_size=4, val_fraction=0.25, tune_last_stage=True, log=lambda _: None)
    before, after = load_paired(run / "best")[0].state_dict(), load_paired(tuned / "last")[0].state_dict()
    first, last = "net.backbone.layer1.0.conv1.weight", "net.backbone.layer4.0.conv1.weight"
    assert torch.equal(before[first], after[first]) and not torch.equal(before[last], after[last])
    first_films = tmp_path / "first-films"  # each visit's first films (a retest is a study of its own)
    first_films.mkdir()
    for path in (data / "images").glob("*.dcm"):
        if "-R1" not in path.name:
            shutil.copy(path, first_films / path.name)
    done = run_cli("svdh-run", "progression", str(first_films), "--json", "--model", str(paired_bundle),
                   "--pseudonym-key", str(tmp_path / "key"), "--out", str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    pairs = [p for r in records for p in r["pairs"]]
    assert pairs and all(p["route"] == "paired" for p in pairs)
    assert all(v >= 0 for p in pairs for v in p["per_area"].values())
    assert all((tmp_path / "out" / name).is_file() for p in pairs for name in p["change_overlays"])
    assert all(p["change"]["total"] == pytest.approx(sum(p["per_area"].values()), abs=0.05) for p in pairs)


def test_a_damaged_paired_graph_is_refused_when_opened(paired_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(paired_bundle, copy)
    data = bytearray((copy / "change.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "change.onnx").write_bytes(bytes(data))
    bundle = load_bundle(copy)  # single films can still be scored
    with pytest.raises(BundleError, match="checksum mismatch for change.onnx"):
        RuntimePairedGraph(bundle)
    (copy / "change.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)
