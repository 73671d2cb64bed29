"""An ensemble of different architectures and input sizes exported as one ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM

from svdh_exporter.checkpoint import read_checkpoint_info, save_checkpoint
from svdh_exporter.ensemble import EnsembleSpec, MemberRef, check_members, write_ensemble
from svdh_exporter.model import ModelSpec, SvdhNet, cam_target_layer
from svdh_exporter.onnx_export import export_bundle
from svdh_runtime.backends.onnxruntime import OnnxRuntimeBackend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import DEFAULT_SEVERITY_CLASSES, Preprocessing
from svdh_runtime.preprocess import resize

CANVAS = (128, 160)
MEMBERS = [  # architecture, head, input size (same aspect ratio), output stride
    ("resnet18", "linear", (128, 160), 16),
    ("mobilenetv2_050", "mlp", (96, 120), 32),
]
WEIGHTS, BIAS = [0.7, 0.45], 3.0


def _member(tmp: Path, index: int) -> tuple[SvdhNet, Path]:
    architecture, head, (height, width), stride = MEMBERS[index]
    torch.manual_seed(index)
    spec = ModelSpec(architecture, 4, head=head, hidden=32, score_mean=40.0, score_std=30.0, output_stride=stride)
    net = SvdhNet(spec).eval()
    generator = torch.Generator().manual_seed(10 + index)
    with torch.no_grad():  # head weights a trained model could have (default init gives all-zero CAMs)
        for p in net.score_head.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 2.0 / p.shape[-1] ** 0.5)
    directory = tmp / f"member{index}"
    save_checkpoint(
        directory,
        net,
        name=f"m{index}",
        version="1",
        preprocessing=Preprocessing(height=height, width=width),
        severity_classes=DEFAULT_SEVERITY_CLASSES,
    )
    return net, directory


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ensemble")
    members = [_member(tmp, i) for i in range(len(MEMBERS))]
    refs = tuple(
        MemberRef(checkpoint=directory.name, weight=w, weights_sha256=read_checkpoint_info(directory).weights_sha256)
        for (_, directory), w in zip(members, WEIGHTS)
    )
    folder = tmp / "combined"
    write_ensemble(folder, EnsembleSpec(name="ens", version="1", combiner="ridge", bias=BIAS, members=refs))
    for _, directory in members:  # member paths are relative to the ensemble folder
        directory.rename(folder / directory.name)
    bundle = tmp / "bundle"
    export_bundle(folder, bundle, log=lambda _: None)
    return {"nets": [net for net, _ in members], "folder": folder, "bundle": bundle}


def _member_input(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What a member trained at ``size`` sees: the canvas resized by the runtime's preprocessing filter."""
    if size == CANVAS:
        return image
    return torch.from_numpy(np.stack([resize(x[0].detach().numpy(), *size)[None] for x in image]))


class _CombinedScore(torch.nn.Module):
    """The torch ensemble written out plainly: each member's forward, then the combiner."""

    def __init__(self, nets: list[SvdhNet]) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = torch.full((image.shape[0],), BIAS)
        for net, (_, _, size, _), weight in zip(self.nets, MEMBERS, WEIGHTS):
            total = total + weight * net(_member_input(image, size))[0]
        return total


def _images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(3).standard_normal((3, 1, *CANVAS), dtype=np.float32))


def test_runtime_matches_the_torch_ensemble(ensemble: dict) -> None:
    image = _images()
    bundle = load_bundle(ensemble["bundle"])
    got = OnnxRuntimeBackend((ensemble["bundle"] / "model.onnx").read_bytes()).infer(image.numpy())
    with torch.no_grad():
        want = _CombinedScore(ensemble["nets"])(image).numpy()
        probs = [
            torch.softmax(net(_member_input(image, size))[1], -1).numpy()
            for net, (_, _, size, _) in zip(ensemble["nets"], MEMBERS)
        ]
    np.testing.assert_allclose(got["score"], want, atol=1e-3)
    np.testing.assert_allclose(got["severity_probs"], np.mean(probs, axis=0), atol=1e-4)
    assert bundle.manifest.preprocessing.height == 128 and bundle.manifest.preprocessing.width == 160
    assert [m.architecture for m in bundle.manifest.members] == ["resnet18", "mobilenetv2_050"]
    assert [m.weight for m in bundle.manifest.members] == WEIGHTS
    assert bundle.manifest.provenance["ensemble"]["bias"] == BIAS
    assert "combined score" in bundle.manifest.outputs.cam_method
    assert (bundle.manifest.outputs.cam_height, bundle.manifest.outputs.cam_width) == (8, 10)  # resnet18 at stride 16


def test_combined_cam_matches_pytorch_grad_cam(ensemble: dict) -> None:
    """pytorch-grad-cam's autograd gradients of the combined score, per member layer, resampled and summed."""
    image = _images()
    nets = ensemble["nets"]
    model = _CombinedScore(nets)
    cam = GradCAM(model=model, target_layers=[cam_target_layer(net) for net in nets])
    cam(image, targets=[lambda output: output] * len(image))
    reference = 0
    for index in range(len(nets)):
        activations = cam.activations_and_grads.activations[index].detach().numpy()
        gradients = cam.activations_and_grads.gradients[index].detach().numpy()
        raw = np.maximum(cam.get_cam_image(image, None, None, activations, gradients), 0)
        grid = torch.from_numpy(np.ascontiguousarray(raw))[:, None]
        reference = reference + F.interpolate(grid, size=(8, 10), mode="bilinear", align_corners=False)[:, 0].numpy()
    exported = OnnxRuntimeBackend((ensemble["bundle"] / "model.onnx").read_bytes()).infer(image.numpy())["cam"]
    for got, want in zip(exported, reference):
        assert want.max() > 0, "reference CAM is all zero; the comparison would be empty"
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.999


def test_ensemble_refuses_members_that_changed(ensemble: dict, tmp_path: Path) -> None:
    data = json.loads((ensemble["folder"] / "ensemble.json").read_text())
    data["members"][0]["weights_sha256"] = "0" * 64
    folder = tmp_path / "stale"
    folder.mkdir()
    (folder / "ensemble.json").write_text(json.dumps(data))
    for member in ("member0", "member1"):
        (folder / member).symlink_to(ensemble["folder"] / member)
    with pytest.raises(BundleError, match="weights changed since the ensemble was fitted"):
        export_bundle(folder, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_ensemble_refuses_members_of_other_aspect_ratio(ensemble: dict, tmp_path: Path) -> None:
    net = SvdhNet(ModelSpec("resnet18", 4)).eval()
    odd = save_checkpoint(
        tmp_path / "odd",
        net,
        name="odd",
        version="1",
        preprocessing=Preprocessing(height=128, width=128),
        severity_classes=DEFAULT_SEVERITY_CLASSES,
    )
    refs = (
        MemberRef(
            str(ensemble["folder"] / "member0"),
            0.5,
            read_checkpoint_info(ensemble["folder"] / "member0").weights_sha256,
        ),
        MemberRef(str(odd), 0.5, read_checkpoint_info(odd).weights_sha256),
    )
    write_ensemble(tmp_path / "ens", EnsembleSpec(name="e", version="1", combiner="mean", bias=0.0, members=refs))
    with pytest.raises(BundleError, match="share one aspect ratio"):
        export_bundle(tmp_path / "ens", tmp_path / "out", log=lambda _: None)


@pytest.mark.parametrize(
    "scales, problem",
    [
        ((1.0, 128 / 96), None),  # 128 px x 1 mm = 96 px x 1.33 mm: one field
        ((1.0, 1.0), "must see the same field"),
        ((1.0, 0.0), "some set mm_per_pixel, some fit the canvas"),
    ],
)
def test_members_drawn_at_a_physical_scale_must_see_the_same_field(
    tmp_path: Path, scales: tuple[float, float], problem: str | None
) -> None:
    refs = []
    for index, ((height, width), mm) in enumerate(zip([(128, 160), (96, 120)], scales)):
        folder = save_checkpoint(
            tmp_path / f"m{index}",
            SvdhNet(ModelSpec("resnet10t", 4)),
            name=f"m{index}",
            version="1",
            preprocessing=Preprocessing(height=height, width=width, mm_per_pixel=mm),
            severity_classes=DEFAULT_SEVERITY_CLASSES,
        )
        refs.append(MemberRef(str(folder), 0.5, read_checkpoint_info(folder).weights_sha256))
    spec = EnsembleSpec(name="e", version="1", combiner="mean", bias=0.0, members=tuple(refs))
    if problem is None:
        assert len(check_members(tmp_path, spec)) == 2
    else:
        with pytest.raises(BundleError, match=problem):
            check_members(tmp_path, spec)
