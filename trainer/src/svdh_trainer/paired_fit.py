"""``svdh-train fit-change``: train the paired network on a longitudinal data set.

Every pair is two films of one patient showing the same hands: a baseline and
a later visit (target: the change of each area between them), or two films of
one day (target: no change; these teach the network that re-positioning, a
new exposure or another detector is not progression). The backbone comes
from a trained single-film checkpoint with a joint head (its locator finds
the joints in each film). It stays frozen, so its feature maps are computed
once per film; the change head and the joint locator are trained, and with
``tune_last_stage`` also the backbone's last stage (at a tenth of the head's
learning rate, from the frozen trunk's output). The targets are the exact per-area changes (``truth.csv``) where the
set has them, standing in for the changes trial readers record when they read
a patient's films side by side; without ``truth.csv``, the change of the
readers' grades in ``labels.csv``. Each epoch draws two visit pairs and one
same-day pair per patient and hand layout; the network is chosen on the
validation patients' RMSE of the total change over visit and same-day pairs.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from svdh_runtime.areas import grade_columns
from svdh_runtime.bundle import sha256_file
from svdh_runtime.files import atomic_write_text

from .agreement import TRUTH_NAME, grades_by_patient, sitting_key
from .datasets import DatasetError, Sample, load_canvases, patient_split, read_dataset
from .metrics import pearson, rmse
from .training_state import TrainingState, load_training_state, save_training_state

COLUMNS = grade_columns()


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs of films: indices into the samples, the per-area target, and what kind they are."""

    first: np.ndarray  # [P] baseline film
    second: np.ndarray  # [P] later film (or the same day's other film)
    change: np.ndarray  # [P, 62] target change per area; NaN for a hand not shown
    same_day: np.ndarray  # [P] bool
    group: np.ndarray  # [P] str: patient and hands shown
    retests: np.ndarray  # [P, 2] the two films' retest numbers

    def take(self, index: np.ndarray) -> Pairs:
        return Pairs(*(a[index] for a in (self.first, self.second, self.change, self.same_day, self.group,
                                            self.retests)))  # fmt: skip

    def __len__(self) -> int:
        return len(self.first)


def film_grades(samples: list[Sample], data: Path) -> np.ndarray:
    """Each film's per-area grades: exact (``truth.csv``) where the set has them, else the labels; NaN for a
    hand the film does not show."""
    exact = grades_by_patient(data / TRUTH_NAME) if (data / TRUTH_NAME).is_file() else None
    rows = []
    for sample in samples:
        labels = np.array(sample.area_grades, float)
        if exact is not None:
            truth = exact[sitting_key(sample.patient_id, sample.sitting)]
            labels = np.where(np.isfinite(labels), [truth[c] for c in COLUMNS], np.nan)
        rows.append(labels)
    return np.array(rows)


def longitudinal_pairs(samples: list[Sample], grades: np.ndarray) -> Pairs:
    """Every visit pair (earlier first, any retests) and every same-day pair (both orders) of each patient's
    films that show the same hands."""
    groups: dict[tuple[str, tuple[bool, ...]], dict[tuple[int, int], int]] = defaultdict(dict)
    for index, sample in enumerate(samples):
        if sample.sitting is None or sample.area_grades is None:
            raise DatasetError(f"{sample.path}: a paired fit needs a longitudinal set with per-area grades")
        shown = tuple(bool(v) for v in np.isfinite(np.array(sample.area_grades, float)))
        groups[(sample.patient_id, shown)][(sample.sitting.visit, sample.sitting.retest)] = index
    rows = []
    for (patient, shown), films in groups.items():
        name = f"{patient}/{sum(shown)}/{shown.index(True) if any(shown) else 0}"
        for (va, ra), a in films.items():
            for (vb, rb), b in films.items():
                if va < vb or (va == vb and ra != rb):
                    rows.append((a, b, va == vb, name, ra, rb))
    if not rows:
        raise DatasetError("no pairs: the set needs patients with two visits, or --retest")
    first, second, same, group, ra, rb = (np.array(c) for c in zip(*rows))
    change = grades[second] - grades[first]
    change[same] = np.where(np.isfinite(change[same]), 0.0, np.nan)
    return Pairs(first, second, change, same, group, np.stack([ra, rb], axis=1))


def draw_epoch(pairs: Pairs, epoch: int, seed: int, visit_per_group: int = 2, same_per_group: int = 1) -> Pairs:
    """This epoch's pairs: a few visit pairs and same-day pairs per patient and hand layout."""
    rng = np.random.default_rng([seed, epoch])
    chosen = []
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(pairs.group):
        by_group[group].append(index)
    for members in by_group.values():
        members = np.array(members)
        for kind, count in ((False, visit_per_group), (True, same_per_group)):
            pool = members[pairs.same_day[members] == kind]
            if len(pool):
                chosen += list(rng.choice(pool, min(count, len(pool)), replace=False))
    chosen = np.array(chosen)
    return pairs.take(rng.permutation(chosen))


def validation_pairs(pairs: Pairs) -> Pairs:
    """Fixed validation pairs: visit pairs of the first films and of the retests, and each day's two films."""
    keep = (pairs.same_day & (pairs.retests[:, 0] == 0)) | (
        ~pairs.same_day & (pairs.retests[:, 0] == pairs.retests[:, 1])
    )
    return pairs.take(np.flatnonzero(keep))


def change_loss(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Huber loss of every shown area's change before the clip (``raw``: every area keeps its gradient), plus
    the squared error of the total change (scaled). (Taking the loss after the clip, to push unchanged areas
    below zero, validated worse: reports/progression.)"""
    shown = torch.isfinite(target)
    target = torch.nan_to_num(target)
    per_area = torch.nn.functional.huber_loss(raw[shown], target[shown], delta=0.5)
    total = ((raw * shown).sum(dim=1) - target.sum(dim=1)) / 4.0
    return per_area + 0.5 * (total * total).mean()


def film_features(net, canvases: np.ndarray, tune_last_stage: bool, progress: Callable) -> np.ndarray:  # noqa: ANN001
    """What the frozen part of the backbone makes of every film, computed once (float16): the feature map, or
    with ``tune_last_stage`` the input of the last stage."""
    net.eval()
    parts = []
    with torch.no_grad():
        for start in progress(range(0, len(canvases), 32), desc="features"):
            x = torch.from_numpy(canvases[start : start + 32].astype(np.float32))[:, None]
            y = net.trunk(x) if tune_last_stage else net.net.feature_map(x)
            parts.append(y.numpy().astype(np.float16))
    return np.concatenate(parts)


def _cached_features(net, canvases: np.ndarray, samples: list[Sample], weights: str, tune_last_stage: bool,  # noqa: ANN001
                     progress: Callable) -> np.ndarray:  # fmt: skip
    """:func:`film_features`, kept beside the data set's prepared canvases (keyed by the backbone's weights
    and the films), so a second fit on the same set starts at once."""
    import hashlib

    from .datasets import CACHE_DIR

    key = hashlib.sha256(json.dumps([weights, tune_last_stage, [str(s.path.resolve()) for s in samples]]).encode())
    cache = samples[0].path.parent.parent / CACHE_DIR / f"paired-features-{key.hexdigest()[:20]}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    features = film_features(net, canvases, tune_last_stage, progress)
    try:
        cache.parent.mkdir(exist_ok=True)
        partial = cache.with_name(cache.name + ".partial.npy")
        np.save(partial, features)
        partial.replace(cache)
    except OSError:
        pass  # a read-only data set: no cache
    return features


def _changes(net, features: np.ndarray, part: Pairs, tune_last_stage: bool):  # noqa: ANN001, ANN202
    before = torch.from_numpy(features[part.first].astype(np.float32))
    after = torch.from_numpy(features[part.second].astype(np.float32))
    if tune_last_stage:
        before, after = net.last_stage(before), net.last_stage(after)
    return net.from_maps(before, after)


def predict_changes(net, features: np.ndarray, pairs: Pairs, tune_last_stage: bool, batch: int = 64) -> np.ndarray:  # noqa: ANN001
    """The network's per-area changes of ``pairs`` ``[P, 62]`` (eval mode)."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            part = pairs.take(np.arange(start, min(start + batch, len(pairs))))
            out.append(_changes(net, features, part, tune_last_stage).areas.numpy())
    return np.concatenate(out)


def change_figures(predicted: np.ndarray, pairs: Pairs) -> dict:
    """Total change (over the shown areas) against the target: visit pairs, same-day pairs."""
    shown = np.isfinite(pairs.change)
    total = (predicted * shown).sum(axis=1)
    target = np.nansum(pairs.change, axis=1)
    visit, same = ~pairs.same_day, pairs.same_day
    return {
        "rmse": rmse(total, target),
        "visit_rmse": rmse(total[visit], target[visit]),
        "visit_pcc": pearson(total[visit], target[visit]),
        "same_day_mean": float(total[same].mean()) if same.any() else math.nan,
    }


def fit_change(
    data: Path,
    start: Path,
    out: Path,
    *,
    epochs: int = 6,
    batch_size: int = 24,
    tune_last_stage: bool = False,
    lr: float = 1e-3,
    hidden: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
    resume: bool = False,
    progress: Callable = lambda it, **_: it,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the paired network; writes ``out/best`` and ``out/last`` (paired checkpoints), ``out/state`` and
    ``out/history.jsonl``; returns ``out/best``."""
    from svdh_exporter.checkpoint import load_network
    from svdh_exporter.paired import PairedChangeNet, PairedSpec, load_paired, save_paired

    torch.manual_seed(seed)
    backbone, info = load_network(start)
    if not backbone.spec.joint_head:
        raise DatasetError(f"{start}: the paired network starts from a checkpoint with a joint head")
    net = PairedChangeNet(PairedSpec(backbone.spec, hidden), backbone)
    samples = read_dataset(Path(data))
    grades = film_grades(samples, Path(data))
    train_samples, val_samples = patient_split(samples, val_fraction, seed)
    val_ids = {s.patient_id for s in val_samples}
    canvases = load_canvases(samples, info.preprocessing, progress=lambda it: progress(it, desc="canvases"))
    features = _cached_features(net, canvases, samples, info.weights_sha256, tune_last_stage, progress)
    del canvases
    _freeze(net, tune_last_stage)
    pairs = longitudinal_pairs(samples, grades)
    is_val = np.array([samples[i].patient_id in val_ids for i in pairs.first])
    train_pairs, val_pairs = pairs.take(np.flatnonzero(~is_val)), validation_pairs(pairs.take(np.flatnonzero(is_val)))
    log(f"{len(samples)} films; {len(train_pairs)} training pairs ({int(train_pairs.same_day.sum())} same-day), "
        f"{len(val_pairs)} validation pairs")  # fmt: skip
    optimiser = _optimiser(net, lr)
    steps_per_epoch = math.ceil(len(draw_epoch(train_pairs, 0, seed)) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / (epochs * steps_per_epoch), 1.0)))
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first_epoch, best = 0, math.inf
    if resume:
        state = load_training_state(out)
        net, _ = load_paired(out / "last")
        if sha256_file(out / "last" / "weights.safetensors") != state.last_weights_sha256:
            raise DatasetError(f"{out}: last/ and state/ are of different epochs; cannot resume")
        _freeze(net, tune_last_stage)
        optimiser = _optimiser(net, lr)
        optimiser.load_state_dict(state.optimiser)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / (epochs * steps_per_epoch), 1.0)))
        )
        schedule.load_state_dict({**state.schedule, "lr_lambdas": [None] * len(optimiser.param_groups)})
        first_epoch, best = state.epoch, state.best_rmse
        log(f"resuming after epoch {first_epoch} (best validation RMSE {best:.3f})")
    provenance = {"data": str(data), "start": str(start), "start_weights_sha256": info.weights_sha256,
                  "val_fraction": val_fraction, "seed": seed, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "tuned": "last stage and change head" if tune_last_stage else "change head and joint locator",
                  "targets": "exact per-area changes (truth.csv)" if (Path(data) / TRUTH_NAME).is_file()
                  else "changes of the readers' grades (labels.csv)"}  # fmt: skip
    for epoch in range(first_epoch, epochs):
        started = time.perf_counter()
        net.train()
        if not tune_last_stage:
            net.net.backbone.eval()  # frozen: its batch-norm statistics stay as trained
        chosen = draw_epoch(train_pairs, epoch, seed)
        losses = []
        for begin in progress(range(0, len(chosen), batch_size), desc=f"epoch {epoch + 1}/{epochs}"):
            part = chosen.take(np.arange(begin, min(begin + batch_size, len(chosen))))
            predicted = _changes(net, features, part, tune_last_stage).raw
            loss = change_loss(predicted, torch.from_numpy(part.change.astype(np.float32)))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        figures = change_figures(predict_changes(net, features, val_pairs, tune_last_stage), val_pairs)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), **{k: round(v, 4) for k, v in figures.items()},
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        log(json.dumps(row))
        with (out / "history.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        save = dict(name="svdh-paired-change", version="0.1.0", preprocessing=info.preprocessing, provenance=provenance)
        if figures["rmse"] < best:
            best = figures["rmse"]
            save_paired(out / "best", net, metrics=row, **save)
        save_paired(out / "last", net, metrics=row, **save)
        schedule_state = {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}
        save_training_state(out, TrainingState(epoch + 1, best, optimiser.state_dict(), schedule_state,
                                               sha256_file(out / "last" / "weights.safetensors")))  # fmt: skip
    atomic_write_text(out / "done.json", json.dumps({"epochs": epochs, "best_rmse": best}) + "\n")
    return out / "best"


def _freeze(net, tune_last_stage: bool) -> None:  # noqa: ANN001
    """Train the change head and the joint locator, and with ``tune_last_stage`` the backbone's last stage."""
    for name, parameter in net.named_parameters():
        trained = not name.startswith("net.") or name.startswith("net.joint_head.locator.")
        parameter.requires_grad_(trained or (tune_last_stage and name.startswith("net.backbone.layer4.")))


def _optimiser(net, lr: float) -> torch.optim.Optimizer:  # noqa: ANN001
    stage = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("net.backbone.")]
    head = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("net.backbone.")]
    groups = [{"params": head, "lr": lr}] + ([{"params": stage, "lr": lr / 10}] if stage else [])
    return torch.optim.AdamW(groups, weight_decay=1e-4)
