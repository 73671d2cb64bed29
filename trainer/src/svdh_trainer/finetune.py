"""Fine-tuning schemes: which parameters train, and at what learning rate.

* ``full``: everything, one learning rate;
* ``head``: the heads only (score, severity and, where there is one, per-area; a linear probe:
  backbone frozen, its batch-norm statistics too);
* ``two_stage``: heads only for ``head_epochs``, then everything;
* ``llrd``: everything, with layer-wise learning-rate decay (timm's layer grouping: each layer
  closer to the input gets ``layer_decay`` times the rate of the one above; heads get the full rate).
"""

from __future__ import annotations

from torch import nn

SCHEMES = ("full", "head", "two_stage", "llrd")


def _heads(net: nn.Module) -> list[nn.Parameter]:
    area_head = getattr(net, "area_head", None)
    extra = [*area_head.parameters()] if area_head is not None else []
    return [*net.score_head.parameters(), *net.severity_head.parameters(), *extra]


def parameter_groups(net: nn.Module, scheme: str, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """Optimiser parameter groups for ``scheme`` (frozen parameters are included but get no gradient)."""
    if scheme not in SCHEMES:
        raise ValueError(f"fine-tuning scheme must be one of {', '.join(SCHEMES)}, found {scheme!r}")
    heads = {"params": _heads(net), "lr": lr, "weight_decay": weight_decay}
    if scheme != "llrd":
        return [{"params": list(net.backbone.parameters()), "lr": lr, "weight_decay": weight_decay}, heads]
    from timm.optim import param_groups_layer_decay

    groups = param_groups_layer_decay(net.backbone, weight_decay=weight_decay, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale")
    return [*groups, heads]


def backbone_trains(scheme: str, epoch: int, head_epochs: int) -> bool:
    """Whether the backbone learns in ``epoch`` (1-based)."""
    return scheme in ("full", "llrd") or (scheme == "two_stage" and epoch > head_epochs)


def set_trainable(net: nn.Module, scheme: str, epoch: int, head_epochs: int) -> None:
    """Freeze or unfreeze the backbone for this epoch; call after ``net.train()``."""
    trains = backbone_trains(scheme, epoch, head_epochs)
    for parameter in net.backbone.parameters():
        parameter.requires_grad_(trains)
    net.backbone.train(trains)  # a frozen backbone keeps its batch-norm statistics
    for parameter in _heads(net):
        parameter.requires_grad_(True)
