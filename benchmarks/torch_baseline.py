"""The torch baseline a user would write by hand: the bundle's own architecture, run by torch.

The network is rebuilt from the manifest (architectures, input sizes, output
stride, head, combiner weights) with untrained weights: latency does not
depend on the weights' values. Only the benchmarks use it; the runtime never
imports torch.
"""

from __future__ import annotations

from typing import Any

from svdh_runtime.manifest import Manifest


def _spec(entry: dict[str, Any], classes: int) -> Any:
    from svdh_exporter.model import ModelSpec

    model = entry["provenance"]["recipe"]["model"] if "provenance" in entry else entry
    return ModelSpec(
        architecture=entry["architecture"],
        num_classes=classes,
        head=model.get("head", "linear"),
        hidden=int(model.get("hidden", 256)),
        output_stride=int(entry.get("output_stride", model.get("output_stride", 32))),
        joint_head=bool(model.get("joint_head", False)),
    )


def torch_graph(manifest: Manifest) -> Any:
    """``image -> (score, severity_probs, cam[, areas, hands, joints])`` in torch for the bundle's architecture
    (eval mode, FP32, CPU)."""
    from svdh_exporter.model import CamGraph, EnsembleCamGraph, SvdhNet

    classes = len(manifest.outputs.severity_classes)
    spec = manifest.preprocessing
    ensemble = manifest.provenance.get("ensemble")
    if ensemble:
        members = ensemble["members"]
        nets = [SvdhNet(_spec(m, classes)) for m in members]
        sizes = [tuple(m["input"]) for m in members]
        graph = EnsembleCamGraph(
            nets, sizes, [m["weight"] for m in members], ensemble["bias"], (spec.height, spec.width)
        )
    else:
        recipe = manifest.provenance.get("recipe", {}).get("model", {})
        graph = CamGraph(SvdhNet(_spec({"architecture": manifest.members[0].architecture, **recipe}, classes)))
    return graph.eval()
