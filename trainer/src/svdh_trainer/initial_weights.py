"""Starting weights for a fit: transfer learning from a local file, never from a hub.

``[model] init`` names either a svdh checkpoint folder (a phantom or bone-age
pretraining run; its weights' sha256 is checked) or a timm weights file in
safetensors format for the same architecture (e.g. ImageNet weights copied to
this machine). timm adapts the first convolution to one input channel.
Pickled files (.pth, .bin) are refused: weights from outside are never unpickled.
"""

from __future__ import annotations

from pathlib import Path

from svdh_exporter.checkpoint import load_network
from svdh_exporter.model import SvdhNet
from svdh_runtime.bundle import sha256_file

from .datasets import DatasetError


def initialise(net: SvdhNet, source: str) -> str:
    """Load starting weights into ``net.backbone``; returns a line for the provenance."""
    path = Path(source)
    if path.is_dir():
        donor, info = load_network(path)
        if donor.spec.architecture != net.spec.architecture:
            raise DatasetError(
                f"{path}: checkpoint is a {donor.spec.architecture}, the recipe asks for {net.spec.architecture}"
            )
        net.backbone.load_state_dict(donor.backbone.state_dict())
        return f"svdh checkpoint {info.name} {info.version} (weights sha256 {info.weights_sha256})"
    if not path.is_file():
        raise DatasetError(f"{path}: no such weights file or checkpoint folder")
    if path.suffix != ".safetensors":
        raise DatasetError(f"{path}: only .safetensors weight files are loaded (pickled weights are never unpickled)")
    import timm

    try:
        donor = timm.create_model(
            net.spec.architecture,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path)},
            num_classes=0,
            global_pool="",
            in_chans=1,
        )
        net.backbone.load_state_dict(donor.state_dict())
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: weights do not fit {net.spec.architecture} ({first})") from None
    return f"timm weights {path.name} (sha256 {sha256_file(path)})"
