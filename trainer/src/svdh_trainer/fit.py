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

from svdh_exporter.augment import augment_batch
from svdh_exporter.checkpoint import WEIGHTS_NAME, save_checkpoint
from svdh_exporter.model import ModelSpec, SvdhNet
from svdh_runtime.bundle import sha256_file

from . import __version__
from .area_head import area_loss, area_mae, area_targets
from .config import TrainConfig
from .damage_map import damage_points, local_target, render_damage
from .datasets import DatasetError, Sample, load_canvases, patient_split, read_dataset
from .finetune import parameter_groups, set_trainable
from .initial_weights import initialise
from .joint_head import JointTargets, joint_loss, joint_metrics, joint_targets, swap_hands
from .metrics import evaluate_predictions, severity_labels
from .training_state import TrainingState, load_training_state, save_training_state


@dataclass
class Split:
    samples: list[Sample]
    canvases: np.ndarray  # [N, H, W] float16
    scores: np.ndarray  # [N] float32
    classes: np.ndarray  # [N] int64
    damage: list[np.ndarray] | None = None  # damaged joints on the canvas per image (damage-map training)
    areas: np.ndarray | None = None  # [N, 31] per-area grade fractions (per-area head training, see area_head)
    joints: JointTargets | None = None  # the joint head's targets ([model] joint_head)


def _split(samples: list[Sample], config: TrainConfig, progress: Callable) -> Split:
    damage = damage_points(samples, config.input) if config.train.damage_map_weight > 0 else None
    joint_head = config.model.joint_head
    areas = area_targets(samples) if config.train.area_loss_weight > 0 and not joint_head else None
    joints = joint_targets(samples, config.input) if joint_head else None
    canvases = load_canvases(samples, config.input, workers=config.data.workers or None, progress=progress)
    scores = np.array([s.score for s in samples], np.float32)
    classes = severity_labels(scores, config.severity_classes)
    return Split(samples, canvases, scores, classes, damage, areas, joints)


def prepare_data(config: TrainConfig, progress: Callable, samples: list[Sample] | None = None) -> tuple[Split, Split]:
    """Training and validation images; ``samples`` replaces ``[data] train`` (cross-validation folds)."""
    train_samples = samples if samples is not None else read_dataset(Path(config.data.train), config.data.format)
    if config.data.val:
        val_samples = read_dataset(Path(config.data.val), config.data.format)
    else:
        train_samples, val_samples = patient_split(train_samples, config.data.val_fraction, config.train.seed)
    return _split(train_samples, config, progress), _split(val_samples, config, progress)


def predict(
    net: SvdhNet, canvases: np.ndarray, batch_size: int = 32, areas: bool = False, joints: bool = False
) -> tuple[np.ndarray, ...]:
    """Scores and severity probabilities of prepared canvases (eval mode, no augmentation).

    With ``areas``, also the auxiliary per-area head's predictions; with ``joints``, also the joint head's
    area grades ``[N, 62]``, hand probabilities ``[N, 2]`` and joint positions ``[N, 62, 2]`` (canvas
    fractions); all from the same pass.
    """
    device = next(net.parameters()).device
    net.eval()
    columns: list[list[np.ndarray]] = [[] for _ in range(2 + areas + 3 * joints)]
    with torch.no_grad():
        for start in range(0, len(canvases), batch_size):
            x = torch.from_numpy(canvases[start : start + batch_size].astype(np.float32))[:, None].to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            s, logits, *extra = net(x, areas=areas, joints=joints)
            values = [s, torch.softmax(logits.float(), -1)]
            if areas:
                values.append(extra.pop(0))
            if joints:
                head = extra.pop(0)
                values += [head.areas, torch.sigmoid(head.hands), head.joints]
            for column, value in zip(columns, values):
                column.append(value.float().cpu().numpy())
    return tuple(np.concatenate(column) for column in columns)


def _joint_batch(targets: JointTargets, index: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The joint head's targets of a batch: area fractions, hands shown, sites."""
    batch = targets.take(index)
    return tuple(torch.from_numpy(t) for t in (batch.areas, batch.shown, batch.sites))


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0


def start_distributed() -> Distributed:
    """Join the torchrun process group when launched by torchrun (NCCL on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def _device(place: Distributed) -> torch.device:
    return torch.device(f"cuda:{place.local_rank}" if torch.cuda.is_available() else "cpu")


def epoch_order(count: int, seed: int, epoch: int, place: Distributed) -> np.ndarray:
    """This rank's images for an epoch: one shuffle shared by all ranks, dealt out like DistributedSampler.

    The shuffle is padded by wrapping so that every rank gets the same number of
    images (the ranks must take the same number of steps).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator).numpy()
    per_rank = math.ceil(count / place.world)
    order = np.resize(order, per_rank * place.world)
    return order[place.rank :: place.world]


def fit(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: Callable | None = None,
    samples: list[Sample] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train per ``config``; writes the best checkpoint (by validation RMSE) and returns where it is.

    ``samples`` (cross-validation) replaces the images of ``[data] train``; the
    validation images are still split off them by patient. Under ``torchrun``
    every process trains on its own shard of each epoch and DDP averages the
    gradients; rank 0 validates and writes. ``resume`` continues an interrupted
    run from ``<output>/last`` and ``<output>/state``.
    """
    from tqdm.auto import tqdm

    place = start_distributed()
    if not place.leader:
        log = lambda _message: None  # noqa: E731
    bar = progress or (lambda it, **kw: tqdm(it, disable=None if place.leader else True, **kw))
    opt = config.train
    torch.manual_seed(opt.seed)
    np.random.seed(opt.seed)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = _device(place)
    out = Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)

    log("preparing images (cached after the first run)")
    train, val = prepare_data(config, lambda it: bar(it, desc="prepare", leave=False), samples)
    log(
        f"train {len(train.samples)} images, validation {len(val.samples)} images, device {device}"
        + (f", {place.world} processes" if place.world > 1 else "")
    )

    spec = ModelSpec(
        architecture=config.model.architecture,
        num_classes=len(config.severity_classes),
        head=config.model.head,
        hidden=config.model.hidden,
        dropout=config.model.dropout,
        score_mean=float(train.scores.mean()),
        score_std=float(max(train.scores.std(), 1.0)),
        output_stride=config.model.output_stride,
        area_outputs=train.areas.shape[1] if train.areas is not None else 0,
        joint_head=config.model.joint_head,
    )
    net = SvdhNet(spec)
    state = None
    if resume:
        state = load_training_state(out)
        started_from = _load_weights(net, out / "last", state.last_weights_sha256)
        log(f"resuming after epoch {state.epoch} of {opt.epochs}")
    else:
        started_from = initialise(net, config.model.init) if config.model.init else "random initialisation"
    log(f"starting from {started_from}")
    net = net.to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(
        parameter_groups(net, opt.finetune, opt.lr, opt.weight_decay, opt.layer_decay), lr=opt.lr
    )
    per_rank = math.ceil(len(train.samples) / place.world)
    steps_per_epoch = max(1, math.ceil(per_rank / opt.batch_size))
    total_steps = steps_per_epoch * opt.epochs
    warmup = max(1, int(opt.warmup_epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        ),
    )
    history_path = out / "history.jsonl"
    best_rmse, first_epoch = float("inf"), 1
    if state is not None:
        optimiser.load_state_dict(state.optimiser)
        schedule.load_state_dict({**state.schedule, "lr_lambdas": [None] * len(optimiser.param_groups)})
        best_rmse, first_epoch = state.best_rmse, state.epoch + 1
        _truncate_history(history_path, state.epoch)
    elif place.leader:
        history_path.write_text("", encoding="utf-8")
    model = _wrap(net, place, opt.finetune)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    started = time.time()
    metrics: dict = {}

    for epoch in range(first_epoch, opt.epochs + 1):
        torch.manual_seed(opt.seed * 1_000_003 + epoch * 7919 + place.rank)  # dropout stream, resumable
        augment_rng = torch.Generator().manual_seed(opt.seed * 1_000_003 + epoch * 7919 + 104_729 * (place.rank + 1))
        net.train()
        set_trainable(net, opt.finetune, epoch, opt.head_epochs)
        order = epoch_order(len(train.samples), opt.seed, epoch, place)
        running, seen = 0.0, 0
        batches = bar(range(steps_per_epoch), desc=f"epoch {epoch}/{opt.epochs}", leave=False)
        for step in batches:
            idx = order[step * opt.batch_size : (step + 1) * opt.batch_size]
            x = torch.from_numpy(train.canvases[idx].astype(np.float32))[:, None]
            density = render_damage([train.damage[i] for i in idx], config.input) if train.damage else None
            joint_batch = _joint_batch(train.joints, idx) if train.joints is not None else None
            if opt.augment:
                moved = augment_batch(
                    x, config.input, augment_rng, density, None if joint_batch is None else joint_batch[2]
                )
                x, density = moved.images, moved.companion
                if joint_batch is not None:
                    joint_batch = tuple(swap_hands(t, moved.flipped) for t in (*joint_batch[:2], moved.points))
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            target = torch.from_numpy((train.scores[idx] - spec.score_mean) / spec.score_std).to(device)
            labels = torch.from_numpy(train.classes[idx]).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                score, logits, *extra = model(
                    x, local=density is not None, areas=train.areas is not None, joints=joint_batch is not None
                )
                z = (score - spec.score_mean) / spec.score_std
                loss = F.smooth_l1_loss(z.float(), target, beta=0.5) + opt.severity_loss_weight * F.cross_entropy(
                    logits.float(), labels
                )
                if density is not None:
                    totals = torch.from_numpy(train.scores[idx])
                    local = extra.pop(0)
                    local_z = local_target(density, totals, tuple(local.shape[1:]), spec.score_mean, spec.score_std)
                    loss = loss + opt.damage_map_weight * F.smooth_l1_loss(local.float(), local_z.to(device), beta=0.5)
                if train.areas is not None:
                    loss = loss + opt.area_loss_weight * area_loss(extra.pop(0), train.areas[idx])
                if joint_batch is not None:
                    areas_loss, rest = joint_loss(
                        extra.pop(0),
                        *(t.to(device) for t in joint_batch),
                        (config.input.height, config.input.width),
                        opt.landmark_loss_weight,
                    )
                    loss = loss + opt.area_loss_weight * areas_loss + rest
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
        _sync_buffers(net, place)
        if not place.leader:
            _barrier(place)
            continue
        pred, probs, *extra_pred = predict(
            net, val.canvases, areas=val.areas is not None, joints=val.joints is not None
        )
        metrics = evaluate_predictions(pred, val.scores, probs.argmax(1), config.severity_classes)
        if val.areas is not None:
            metrics["area_mae"] = area_mae(extra_pred.pop(0), val.areas)
        if val.joints is not None:
            metrics |= joint_metrics(*extra_pred, val.joints, config.input)
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
            best_rmse = metrics["rmse"]
            _save(out / "best", net, config, {"validation": {**metrics, "epoch": epoch}}, started_from)
        _save(out / "last", net, config, {"validation": {**metrics, "epoch": epoch}}, started_from)
        schedule_state = {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}
        weights = sha256_file(out / "last" / WEIGHTS_NAME)
        save_training_state(out, TrainingState(epoch, best_rmse, optimiser.state_dict(), schedule_state, weights))
        _barrier(place)
    log(f"best validation RMSE {best_rmse:.2f}; checkpoint {out / 'best'}")
    return FitResult(best=out / "best", net=net, images_seen=seen_images(train, place, opt.seed, first_epoch))


@dataclass(frozen=True)
class FitResult:
    best: Path  # best checkpoint folder
    net: SvdhNet  # the network as trained (this process's copy)
    images_seen: tuple[str, ...]  # names of the images this process trained on in its first epoch


def seen_images(train: Split, place: Distributed, seed: int, epoch: int) -> tuple[str, ...]:
    """The images of this process's shard in ``epoch``."""
    order = epoch_order(len(train.samples), seed, epoch, place)
    return tuple(train.samples[i].path.name for i in order)


def _wrap(net: SvdhNet, place: Distributed, scheme: str) -> torch.nn.Module:
    """DDP around the network when there are several processes (frozen backbones leave parameters unused)."""
    if place.world == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [place.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=scheme in ("head", "two_stage"))


def _sync_buffers(net: SvdhNet, place: Distributed) -> None:
    """Give every rank rank 0's batch-norm statistics, so all ranks hold the same model."""
    if place.world == 1:
        return
    import torch.distributed as dist

    for buffer in net.buffers():
        dist.broadcast(buffer, 0)


def _barrier(place: Distributed) -> None:
    if place.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _load_weights(net: SvdhNet, checkpoint: Path, expected_sha256: str) -> str:
    """Load the weights a resumed run stopped with; returns where that run started from."""
    from svdh_exporter.checkpoint import load_network
    from svdh_runtime.errors import BundleError

    try:
        donor, info = load_network(checkpoint)
    except BundleError as exc:
        raise DatasetError(f"cannot resume: {exc}") from None
    if info.weights_sha256 != expected_sha256:
        raise DatasetError(
            f"cannot resume: {checkpoint} is not the checkpoint the training state was saved with "
            "(the run was stopped while saving); start the run again without --resume"
        )
    net.load_state_dict(donor.state_dict())
    return str(info.provenance.get("initial_weights", "random initialisation"))


def _truncate_history(path: Path, epochs: int) -> None:
    """Keep the history of the epochs the saved state covers (a kill may leave a later line)."""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("epoch", 0) <= epochs]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


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
