"""Fit one network: AdamW, warm-up + cosine schedule, augmentation, AMP on a GPU."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from svdh_exporter.checkpoint import save_checkpoint
from svdh_exporter.model import ModelSpec, SvdhNet

from . import __version__
from .augment import augment_batch
from .config import TrainConfig
from .datasets import Sample, load_canvases, patient_split, read_phantom_dir
from .finetune import parameter_groups, set_trainable
from .initial_weights import initialise
from .metrics import evaluate_predictions, severity_labels


@dataclass
class Split:
    samples: list[Sample]
    canvases: np.ndarray  # [N, H, W] float16
    scores: np.ndarray  # [N] float32
    classes: np.ndarray  # [N] int64


def _split(samples: list[Sample], config: TrainConfig, progress: Callable) -> Split:
    canvases = load_canvases(samples, config.input, workers=config.data.workers or None, progress=progress)
    scores = np.array([s.score for s in samples], np.float32)
    return Split(samples, canvases, scores, severity_labels(scores, config.severity_classes))


def prepare_data(config: TrainConfig, progress: Callable, samples: list[Sample] | None = None) -> tuple[Split, Split]:
    """Training and validation images; ``samples`` replaces ``[data] train`` (cross-validation folds)."""
    train_samples = samples if samples is not None else read_phantom_dir(Path(config.data.train))
    if config.data.val:
        val_samples = read_phantom_dir(Path(config.data.val))
    else:
        train_samples, val_samples = patient_split(train_samples, config.data.val_fraction, config.train.seed)
    return _split(train_samples, config, progress), _split(val_samples, config, progress)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict(net: SvdhNet, canvases: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Scores and severity probabilities of prepared canvases (eval mode, no augmentation)."""
    device = next(net.parameters()).device
    net.eval()
    scores, probs = [], []
    with torch.no_grad():
        for start in range(0, len(canvases), batch_size):
            x = torch.from_numpy(canvases[start : start + batch_size].astype(np.float32))[:, None].to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            s, logits = net(x)
            scores.append(s.float().cpu().numpy())
            probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
    return np.concatenate(scores), np.concatenate(probs)


def fit(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
    samples: list[Sample] | None = None,
) -> Path:
    """Train per ``config``; writes the best checkpoint (by validation RMSE) and returns its directory.

    ``samples`` (cross-validation) replaces the images of ``[data] train``; the
    validation images are still split off them by patient.
    """
    from tqdm.auto import tqdm

    bar = progress or (lambda it, **kw: tqdm(it, disable=None, **kw))  # no bar when not a terminal
    opt = config.train
    torch.manual_seed(opt.seed)
    np.random.seed(opt.seed)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = _device()
    out = Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)

    log("preparing images (cached after the first run)")
    train, val = prepare_data(config, lambda it: bar(it, desc="prepare", leave=False), samples)
    log(f"train {len(train.samples)} images, validation {len(val.samples)} images, device {device}")

    spec = ModelSpec(
        architecture=config.model.architecture,
        num_classes=len(config.severity_classes),
        head=config.model.head,
        hidden=config.model.hidden,
        dropout=config.model.dropout,
        score_mean=float(train.scores.mean()),
        score_std=float(max(train.scores.std(), 1.0)),
        output_stride=config.model.output_stride,
    )
    net = SvdhNet(spec)
    started_from = initialise(net, config.model.init) if config.model.init else "random initialisation"
    log(f"starting from {started_from}")
    net = net.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(
        parameter_groups(net, opt.finetune, opt.lr, opt.weight_decay, opt.layer_decay), lr=opt.lr
    )
    steps_per_epoch = max(1, math.ceil(len(train.samples) / opt.batch_size))
    total_steps = steps_per_epoch * opt.epochs
    warmup = max(1, int(opt.warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        ),
    )
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    generator = torch.Generator().manual_seed(opt.seed)
    history_path = out / "history.jsonl"
    history_path.write_text("", encoding="utf-8")
    best_rmse, best_metrics = float("inf"), {}
    started = time.time()

    for epoch in range(1, opt.epochs + 1):
        net.train()
        set_trainable(net, opt.finetune, epoch, opt.head_epochs)
        order = torch.randperm(len(train.samples), generator=generator).numpy()
        running, seen = 0.0, 0
        batches = bar(range(steps_per_epoch), desc=f"epoch {epoch}/{opt.epochs}", leave=False)
        for step in batches:
            idx = order[step * opt.batch_size : (step + 1) * opt.batch_size]
            x = torch.from_numpy(train.canvases[idx].astype(np.float32))[:, None]
            if opt.augment:
                x = augment_batch(x, config.input, generator)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            target = torch.from_numpy((train.scores[idx] - spec.score_mean) / spec.score_std).to(device)
            labels = torch.from_numpy(train.classes[idx]).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                score, logits = net(x)
                z = (score - spec.score_mean) / spec.score_std
                loss = F.smooth_l1_loss(z.float(), target, beta=0.5) + opt.severity_loss_weight * F.cross_entropy(
                    logits.float(), labels
                )
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            if hasattr(batches, "set_postfix"):
                batches.set_postfix(loss=f"{running / seen:.4f}")
        pred, probs = predict(net, val.canvases)
        metrics = evaluate_predictions(pred, val.scores, probs.argmax(1), config.severity_classes)
        record = {
            "epoch": epoch,
            "train_loss": round(running / max(seen, 1), 5),
            **metrics,
            "elapsed_s": round(time.time() - started, 1),
        }
        with history_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        log(
            f"epoch {epoch}: loss {record['train_loss']:.4f}  val PCC {metrics['pcc']:.3f}  RMSE {metrics['rmse']:.2f}  "
            f"MAE {metrics['mae']:.2f}  severity acc {metrics['severity_accuracy']:.3f}"
        )
        if metrics["rmse"] < best_rmse:
            best_rmse, best_metrics = metrics["rmse"], {"validation": {**metrics, "epoch": epoch}}
            _save(out / "best", net, config, best_metrics, started_from)
    _save(out / "last", net, config, {"validation": {**metrics, "epoch": opt.epochs}}, started_from)
    log(f"best validation RMSE {best_rmse:.2f}; checkpoint {out / 'best'}")
    return out / "best"


def _save(directory: Path, net: SvdhNet, config: TrainConfig, metrics: dict, started_from: str) -> None:
    provenance = {
        "recipe": config.to_dict(),
        "initial_weights": started_from,
        "trainer": f"svdh-trainer {__version__}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "data": _data_provenance(config),
    }
    save_checkpoint(
        directory,
        net,
        name=config.output.name,
        version=config.output.version,
        preprocessing=config.input,
        severity_classes=config.severity_classes,
        metrics=metrics,
        provenance=provenance,
    )


def _data_provenance(config: TrainConfig) -> dict:
    info = {}
    for role, folder in (("train", config.data.train), ("val", config.data.val)):
        meta = Path(folder) / "phantom.json" if folder else None
        if meta and meta.is_file():
            info[role] = json.loads(meta.read_text(encoding="utf-8"))
        elif folder:
            info[role] = {"folder": os.path.basename(folder)}
    return info
