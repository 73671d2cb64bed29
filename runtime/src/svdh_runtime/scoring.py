"""Score images with a verified bundle on a backend: read, prepare, infer, interpret."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .areas import SUBTOTAL_MAX
from .backends import Backend
from .backends.base import output_shape_problems
from .bundle import Bundle
from .errors import BackendError, InputError
from .imageio import ImageMeta, LoadedImage, read_image
from .intervals import Interval, interval, severity_probabilities
from .manifest import DEFAULT_INTERVAL_LEVEL, Manifest, Preprocessing, check_level, severity_index
from .per_area import AreaReading, read_areas
from .preprocess import Prepared, prepare_loaded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image."""

    score: float  # clamped to the manifest's score range
    score_raw: float  # as the graph returned it
    severity_index: int  # always the class whose bin holds the score
    severity: str
    probabilities: dict[str, float]  # of the score's predictive distribution when calibrated, else the head's
    cam: np.ndarray  # float32 [h, w], raw Grad-CAM on the model canvas grid
    probabilities_source: str = "severity head"  # or "score distribution" (calibrated bundles)
    areas: AreaReading | None = None  # bundles with a joint head
    interval: Interval | None = None  # the total's, in calibrated bundles
    subtotal_intervals: dict[str, Interval] = field(default_factory=dict)  # erosion, narrowing, LH, RH


@dataclass
class ScoreResult:
    """Everything known about one input after scoring (or failing to)."""

    source: str
    status: str  # "ok", "error" (unreadable or refused input) or "rejected" (failed the input gate)
    reason: str | None = None
    prediction: Prediction | None = None
    meta: ImageMeta | None = None
    image: LoadedImage | None = None
    prepared: Prepared | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    ood_distance: float | None = None  # the input gate's distance, when the bundle has one
    display: np.ndarray | None = None  # the overlay's grey levels (uint8), when made ahead of scoring


def interpret(
    outputs: dict[str, np.ndarray], manifest: Manifest, level: float = DEFAULT_INTERVAL_LEVEL
) -> list[Prediction]:
    """Turn raw graph outputs of a batch into predictions (intervals at ``level``)."""
    spec = manifest.outputs
    names = spec.severity_names
    bounds = (spec.score_min, spec.score_max)
    total_calibration = spec.interval_for("total")
    predictions = []
    for row, (raw, head_probs, cam) in enumerate(zip(outputs["score"], outputs["severity_probs"], outputs["cam"])):
        raw = float(raw)
        score = float(np.clip(raw, *bounds))
        reading = (
            read_areas(outputs["areas"][row], outputs["hands"][row], outputs["joints"][row]) if spec.per_area else None
        )
        disagreement = reading.disagreement(raw) if reading is not None else 0.0
        index = severity_index(score, spec.severity_classes)
        probs, source, total_interval = [float(p) for p in head_probs], "severity head", None
        if total_calibration is not None:
            probs = severity_probabilities(total_calibration, score, disagreement, spec.severity_classes, bounds)
            source = "score distribution"
            total_interval = interval(total_calibration, score, disagreement, level, bounds)
        predictions.append(
            Prediction(
                score=score,
                score_raw=raw,
                severity_index=index,
                severity=names[index],
                probabilities={name: float(p) for name, p in zip(names, probs)},
                cam=np.asarray(cam, dtype=np.float32),
                probabilities_source=source,
                areas=reading,
                interval=total_interval,
                subtotal_intervals=_subtotal_intervals(manifest, reading, disagreement, level),
            )
        )
    return predictions


def _subtotal_intervals(
    manifest: Manifest, reading: AreaReading | None, disagreement: float, level: float
) -> dict[str, Interval]:
    """Intervals of the erosion and narrowing sums and of each shown hand's total, where calibrated."""
    intervals = {}
    for target in ("erosion", "narrowing", "LH", "RH"):
        calibration = manifest.outputs.interval_for(target)
        estimate = reading.estimate(target) if reading is not None else None
        if calibration is None or estimate is None:
            continue
        intervals[target] = interval(calibration, estimate, disagreement, level, (0.0, float(SUBTOTAL_MAX[target])))
    return intervals


def gate(outputs: dict[str, np.ndarray], manifest: Manifest) -> tuple[float, str | None] | None:
    """The input gate of a one-image batch (or one row of a batch, :func:`batch_row`): (distance, reason to
    reject or None); None without a gate. A graph with the distance but no threshold in its manifest (a gate
    switched off) gives the distance, never a rejection."""
    threshold = manifest.outputs.ood_threshold
    if "ood_distance" not in outputs:
        if threshold > 0:
            raise BackendError("the manifest sets an input gate but the model has no ood_distance output")
        return None
    distance = float(outputs["ood_distance"][0])
    if threshold <= 0 or distance <= threshold:  # NaN is never <= : an image the gate cannot measure is refused
        return distance, None
    return distance, (
        f"the image is unlike the hand radiographs the model was trained on "
        f"(input-gate distance {distance:.2f} > threshold {threshold:.2f})"
    )


class Scorer:
    """Scores files one at a time; a bad file gives an ``error`` result, never an exception."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend | None,
        include_phi: bool = False,
        interval_level: float = DEFAULT_INTERVAL_LEVEL,
    ) -> None:
        """``backend`` may be set later: reading and preparing need only the bundle."""
        check_level(interval_level)
        self.bundle = bundle
        self.backend = backend
        self.include_phi = include_phi
        self.interval_level = interval_level

    def score_file(self, path: Path) -> ScoreResult:
        """Read, prepare and score one file."""
        return self.infer(self.prepare_file(path))

    def prepare_file(self, path: Path) -> ScoreResult:
        """Read and prepare one file (thread-safe; batch runs do this ahead of inference)."""
        return prepare_file(path, self.bundle.manifest.preprocessing, self.include_phi)

    def predict(self, outputs: dict[str, np.ndarray], result: ScoreResult) -> Prediction:
        """The prediction of a one-image batch's outputs for a prepared ``result``: :func:`interpret` at this
        scorer's interval level, with the joints placed on the source image (full resolution)."""
        prediction = interpret(outputs, self.bundle.manifest, self.interval_level)[0]
        if prediction.areas is None:
            return prediction
        placed = prediction.areas.placed(result.prepared.box, result.image.full_shape)
        return dataclasses.replace(prediction, areas=placed)

    def infer(self, result: ScoreResult) -> ScoreResult:
        """Run the model on a prepared result (a refused one is returned as it is)."""
        return self.infer_batch([result])[0]

    def infer_batch(self, results: list[ScoreResult]) -> list[ScoreResult]:
        """Run the model once on every prepared result of ``results`` (one backend call, batch = how many are
        prepared); the refused ones are returned as they are. Each image's timing is its share of the call."""
        ready = [r for r in results if r.prepared is not None]
        if not ready:
            return results
        started = time.perf_counter()
        outputs = self.backend.infer(np.stack([r.prepared.canvas[None] for r in ready]))
        self.accept_outputs(outputs, ready, _ms((time.perf_counter() - started) / len(ready)))
        return results

    def accept_outputs(self, outputs: dict[str, np.ndarray], ready: list[ScoreResult], share_ms: float | None) -> None:
        """Check a batch's graph outputs against the manifest, then gate and interpret row k into ``ready[k]``
        (each prepared; ``share_ms``: each image's share of the backend call, None when not timed here)."""
        problems = output_shape_problems({k: v.shape for k, v in outputs.items()}, self.bundle.manifest.outputs)
        problems += [f"{name} has {len(v)} rows for {len(ready)} images" for name, v in outputs.items()
                     if len(v) != len(ready)]  # fmt: skip
        if problems:  # any backend, any batch: never a score from a graph that disagrees with its manifest
            raise BackendError(f"the model does not match its manifest: {'; '.join(problems)}")
        for row, result in enumerate(ready):
            if share_ms is not None:
                result.timings_ms["inference"] = share_ms
            self._interpret_row(batch_row(outputs, row), result)

    def _interpret_row(self, outputs: dict[str, np.ndarray], result: ScoreResult) -> None:
        """Gate and interpret one image's outputs (a one-image batch) into ``result``."""
        rejection = gate(outputs, self.bundle.manifest)
        log.debug(
            "%s: timings %s ms, input-gate distance %s",
            result.source,
            result.timings_ms,
            None if rejection is None else round(rejection[0], 3),
        )
        if rejection is not None:
            result.ood_distance, reason = rejection
            if reason is not None:
                result.status, result.reason = "rejected", f"{result.source}: not scored: {reason}"
                return
        result.prediction = self.predict(outputs, result)
        result.status = "ok"


def prepare_file(path: Path, spec: Preprocessing, include_phi: bool = False) -> ScoreResult:
    """Read one file and prepare it for the model; a bad file gives an ``error`` result, never an exception."""
    result = ScoreResult(source=str(path), status="error")
    started = time.perf_counter()
    try:
        image = read_image(Path(path), include_phi=include_phi, needed=(spec.height, spec.width))
    except InputError as exc:  # the reader's messages name the file
        result.reason = str(exc)
        return result
    result.image, result.meta = image, image.meta
    read_done = time.perf_counter()
    try:
        result.prepared = prepare_loaded(image, spec)
    except InputError as exc:  # blank, non-finite, too small: said of this file
        result.reason = f"{path}: {exc}"
        return result
    result.timings_ms = {"read": _ms(read_done - started), "preprocess": _ms(time.perf_counter() - read_done)}
    return result


def batch_row(outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """One image's outputs of a batch, as a one-image batch."""
    return {name: values[row : row + 1] for name, values in outputs.items()}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)
