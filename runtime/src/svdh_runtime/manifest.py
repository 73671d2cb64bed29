"""The bundle manifest: one schema shared by trainer, exporter and runtime.

The preprocessing parameters and the severity classes live here and nowhere
else. Each part is a frozen dataclass with ``to_dict``/``from_dict``; reading
validates types and ranges and raises :class:`BundleError` naming the field.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCORE_MIN = 0.0
MAX_CANVAS = 4096  # the model canvas side, in pixels (larger would be a memory bomb, not a model)
SCORE_MAX = 280.0  # hands and wrists: 2 x (16 x 5 erosion + 15 x 4 narrowing)


@dataclass(frozen=True)
class Preprocessing:
    """How a radiograph becomes the model's ``image[N, 1, H, W]`` input.

    The image (bone bright) is resized to fit ``height x width`` keeping its
    aspect ratio, its intensities are mapped so that the ``low_percentile`` and
    ``high_percentile`` of the content become 0 and 1 (clipped), it is padded
    with ``pad_value`` to the full canvas, then standardised with ``mean`` and
    ``std``.

    ``mm_per_pixel`` > 0 gives the canvas a physical scale: an image whose pixel
    spacing is known is drawn at that many millimetres per canvas pixel, so a
    hand has the same size on the canvas whatever the detector's resolution or
    the field size; only an image too large for the canvas at that scale is
    shrunk to fit. Images without a known spacing are fitted to the canvas.
    0 fits every image (see :func:`svdh_runtime.preprocess.placement`).
    """

    height: int
    width: int
    channels: int = 1
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    pad_value: float = 0.0
    mean: float = 0.35
    std: float = 0.3
    resample: str = "bilinear"
    mm_per_pixel: float = 0.0

    def __post_init__(self) -> None:
        _require(
            32 <= self.height <= MAX_CANVAS and 32 <= self.width <= MAX_CANVAS,
            f"preprocessing.height/width must be in [32, {MAX_CANVAS}]",
        )
        _require(self.channels == 1, "preprocessing.channels must be 1")
        _require(
            0.0 <= self.low_percentile < self.high_percentile <= 100.0,
            "preprocessing percentiles must satisfy 0 <= low < high <= 100",
        )
        _require(self.std > 0, "preprocessing.std must be > 0")
        _require(
            self.resample in ("bilinear", "bicubic", "box"), "preprocessing.resample must be bilinear, bicubic or box"
        )
        _require(
            isinstance(self.mm_per_pixel, (int, float))
            and not isinstance(self.mm_per_pixel, bool)
            and 0.0 <= self.mm_per_pixel <= 10.0,
            "preprocessing.mm_per_pixel must be a number in [0, 10] (0: fit to the canvas)",
        )


@dataclass(frozen=True)
class SeverityClass:
    """A severity class: scores in ``[lower, upper)`` (the last class includes its upper bound)."""

    name: str
    lower: float
    upper: float


# svdh's severity classes of the hands-and-wrists SvdH total (0-280). They are
# product definitions, recorded in every manifest; a model is trained with the
# classes of its recipe and the runtime reads them from the bundle only.
DEFAULT_SEVERITY_CLASSES: tuple[SeverityClass, ...] = (
    SeverityClass("none", 0.0, 5.0),
    SeverityClass("mild", 5.0, 30.0),
    SeverityClass("moderate", 30.0, 80.0),
    SeverityClass("severe", 80.0, SCORE_MAX),
)


def severity_index(score: float, classes: tuple[SeverityClass, ...]) -> int:
    """Index of the class whose range holds ``score`` (clamped into the covered range)."""
    for index, cls in enumerate(classes):
        if score < cls.upper:
            return index
    return len(classes) - 1


def validate_severity_classes(classes: tuple[SeverityClass, ...]) -> None:
    """Classes must be named, contiguous and increasing."""
    _require(len(classes) >= 2, "outputs.severity_classes needs at least two classes")
    for cls in classes:
        _require(bool(cls.name), "every severity class needs a name")
        _require(cls.lower < cls.upper, f"severity class {cls.name!r}: lower must be < upper")
    for prev, nxt in zip(classes, classes[1:]):
        _require(prev.upper == nxt.lower, f"severity classes {prev.name!r} and {nxt.name!r} must be contiguous")


DEFAULT_INTERVAL_LEVEL = 0.9
INTERVAL_TARGETS = ("total", "erosion", "narrowing", "LH", "RH")


def check_level(level: float) -> None:
    """An interval level is a probability strictly between 0 and 1."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be between 0 and 1 (exclusive), found {level:g}")


def check_scores(scores: tuple[float, ...], what: str) -> None:
    """Conformal scores: at least 10 finite non-negative numbers, sorted."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores)
    if len(scores) < 10 or not numbers or any(not math.isfinite(v) or v < 0 for v in scores):
        raise ValueError(f"{what} scores must be at least 10 finite non-negative numbers")
    if list(scores) != sorted(scores):
        raise ValueError(f"{what} scores must be sorted")


def conformal_quantile(scores: tuple[float, ...], level: float) -> float:
    """The ``ceil((n + 1) level)``-th smallest score; infinite when there are too few scores for the level
    (n < 1 / (1 - level) - 1)."""
    check_level(level)
    rank = math.ceil((len(scores) + 1) * level)
    return math.inf if rank > len(scores) else scores[rank - 1]


@dataclass(frozen=True)
class IntervalCalibration:
    """The calibration of one target's intervals (stored in ``manifest.outputs.intervals``)."""

    target: str  # one of INTERVAL_TARGETS
    base: float
    per_point: float
    per_disagreement: float
    scores: tuple[float, ...]  # sorted |truth - estimate| / difficulty of the calibration images
    level: float = DEFAULT_INTERVAL_LEVEL  # the level reported when the user asks for none

    def __post_init__(self) -> None:
        if self.target not in INTERVAL_TARGETS:
            raise ValueError(f"interval target must be one of {', '.join(INTERVAL_TARGETS)}, found {self.target!r}")
        if not self.base > 0 or self.per_point < 0 or self.per_disagreement < 0:
            raise ValueError("interval difficulty needs base > 0 and non-negative slopes")
        check_scores(self.scores, "interval")
        check_level(self.level)

    def difficulty(self, estimate: float, disagreement: float = 0.0) -> float:
        return self.base + self.per_point * max(estimate, 0.0) + self.per_disagreement * abs(disagreement)

    def quantile(self, level: float) -> float:
        return conformal_quantile(self.scores, level)


CHANGE_ROUTES = ("difference", "paired")


@dataclass(frozen=True)
class ChangeCalibration:
    """What a bundle's change between two visits is worth by one route (``manifest.outputs.changes``), measured on
    longitudinal images it never saw (``svdh-train calibrate`` on a longitudinal folder).

    ``sdc`` is the smallest detectable change (Bruynesteijn et al., Ann Rheum Dis 2005): ``1.96 * SD(d) /
    sqrt(2)``, where ``d`` is, for each pair of visits filmed twice, the change measured on the first films
    minus the change measured on the retest films. ``zero_level`` is where "no change" lies for the route:
    the mean change it measured between two films of one day (0 for the difference route up to noise; the
    paired route's per-area changes are never negative, so their noise adds up above 0). A change is a
    progression when it exceeds ``zero_level + sdc``: more than 95 % of what re-filming alone produces. The
    change's interval is split-conformal like the scores'
    (:mod:`svdh_runtime.change`): ``change -+ q * (base + per_point * the pair's mean score)``.
    """

    route: str  # "difference": the follow-up's score minus the baseline's; "paired": the paired graph
    sdc: float
    sdc_pairs: int  # visit pairs with retests the SDC was measured on
    base: float
    per_point: float
    scores: tuple[float, ...]  # sorted |true change - change| / difficulty of the calibration pairs
    level: float = DEFAULT_INTERVAL_LEVEL
    zero_level: float = 0.0  # the mean change between two films of one day

    @property
    def progression_threshold(self) -> float:
        """A change above this is a progression."""
        return self.zero_level + self.sdc

    def __post_init__(self) -> None:
        if self.route not in CHANGE_ROUTES:
            raise ValueError(f"change route must be one of {', '.join(CHANGE_ROUTES)}, found {self.route!r}")
        if not self.sdc > 0 or self.sdc_pairs < 2:
            raise ValueError("change calibration needs sdc > 0 measured on at least 2 pairs")
        if not self.base > 0 or self.per_point < 0:
            raise ValueError("change difficulty needs base > 0 and a non-negative slope")
        check_scores(self.scores, "change")
        check_level(self.level)

    def difficulty(self, mean_score: float) -> float:
        return self.base + self.per_point * max(mean_score, 0.0)

    def quantile(self, level: float) -> float:
        return conformal_quantile(self.scores, level)


PAIRED_FILE = "change.onnx"


@dataclass(frozen=True)
class PairedSpec:
    """The bundle's paired graph (``manifest.outputs.paired``): ``(baseline, followup)`` canvases ->
    ``change_areas[N, 62]`` (each area's change, >= 0), ``hands[N, 2]`` (the follow-up's) and
    ``change_cam[N, h, w]``, on the bundle's own preprocessing."""

    file: str = PAIRED_FILE
    cam_height: int = 0
    cam_width: int = 0
    cam_method: str = ""
    trained_on: str = ""  # what its targets were (exact changes of phantoms, readers' changes)

    def __post_init__(self) -> None:
        if self.file != PAIRED_FILE:
            raise ValueError(f"the paired graph's file must be {PAIRED_FILE}")
        if self.cam_height <= 0 or self.cam_width <= 0:
            raise ValueError("the paired graph's CAM needs a positive size")


@dataclass(frozen=True)
class OutputSpec:
    """What the graph returns: ``score[N]``, ``severity_probs[N, K]``, ``cam[N, h, w]``, optionally ``ood_distance[N]``.

    With ``ood_threshold`` > 0 the graph also returns ``ood_distance``: images
    beyond the threshold are rejected as unlike the training radiographs.
    """

    severity_classes: tuple[SeverityClass, ...] = DEFAULT_SEVERITY_CLASSES
    score_min: float = SCORE_MIN
    score_max: float = SCORE_MAX
    cam_height: int = 0
    cam_width: int = 0
    cam_method: str = "grad-cam (raw, ReLU of gradient-weighted feature maps; not normalised)"
    ood_threshold: float = 0.0  # 0: the bundle has no input gate
    ood_method: str = ""
    per_area: bool = False  # True: the graph also returns areas, hands and joints (see backends.base)
    intervals: tuple[IntervalCalibration, ...] = ()  # conformal interval calibrations (svdh_runtime.intervals)
    changes: tuple[ChangeCalibration, ...] = ()  # what a change between visits is worth, per route (.change)
    paired: PairedSpec | None = None  # the paired graph, when the bundle has one (svdh_runtime.paired)

    def __post_init__(self) -> None:
        validate_severity_classes(self.severity_classes)
        _require(self.score_min < self.score_max, "outputs.score_min must be < score_max")
        _require(self.ood_threshold >= 0, "outputs.ood_threshold must be >= 0")
        _require(self.paired is None or self.per_area, "outputs.paired needs per-area outputs")
        routes = [c.route for c in self.changes]
        _require(len(set(routes)) == len(routes), "outputs.changes has a route twice")
        _require(
            "paired" not in routes or self.paired is not None, "outputs.changes: a paired route needs a paired graph"
        )
        targets = [c.target for c in self.intervals]
        _require(len(set(targets)) == len(targets), "outputs.intervals has a target twice")
        _require(self.per_area or set(targets) <= {"total"}, "outputs.intervals for subtotals need per-area outputs")

    def change_for(self, route: str) -> ChangeCalibration | None:
        """The change calibration of ``route`` ("difference" or "paired"), if the bundle has one."""
        return next((c for c in self.changes if c.route == route), None)

    def interval_for(self, target: str) -> IntervalCalibration | None:
        """The calibration of ``target``'s intervals, if the bundle has one."""
        return next((c for c in self.intervals if c.target == target), None)

    @property
    def severity_names(self) -> tuple[str, ...]:
        return tuple(cls.name for cls in self.severity_classes)


@dataclass(frozen=True)
class Member:
    """One network of the model (an ensemble has several)."""

    name: str
    architecture: str
    weight: float = 1.0
    cam_layer: str = ""


@dataclass(frozen=True)
class Manifest:
    """Everything downstream needs to know about a bundle."""

    name: str
    version: str
    created: str
    preprocessing: Preprocessing
    outputs: OutputSpec
    members: tuple[Member, ...]
    files: Mapping[str, str] = field(default_factory=dict)  # relative path -> sha256
    metrics: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = dict(sorted(self.files.items()))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if not isinstance(data, Mapping):
            raise BundleError("manifest must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version is {version!r}, this svdh-runtime reads version {SCHEMA_VERSION}; "
                "install the svdh-runtime release that matches the bundle"
            )
        outputs = dict(_section(data, "outputs"))
        classes = outputs.get("severity_classes", [])
        if not isinstance(classes, (list, tuple)):
            raise BundleError(
                f"invalid manifest: outputs.severity_classes must be a list, found {type(classes).__name__}"
            )
        outputs["severity_classes"] = tuple(_build(SeverityClass, c, "outputs.severity_classes[]") for c in classes)
        intervals = outputs.get("intervals", [])
        if not isinstance(intervals, (list, tuple)):
            raise BundleError(f"invalid manifest: outputs.intervals must be a list, found {type(intervals).__name__}")
        outputs["intervals"] = tuple(_interval(c) for c in intervals)
        changes = outputs.get("changes", [])
        if not isinstance(changes, (list, tuple)):
            raise BundleError(f"invalid manifest: outputs.changes must be a list, found {type(changes).__name__}")
        outputs["changes"] = tuple(_change(c) for c in changes)
        if outputs.get("paired") is not None:
            outputs["paired"] = _build(PairedSpec, outputs["paired"], "outputs.paired")
        files = _typed(data, "files", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise BundleError("invalid manifest: files must map file names to sha256 strings")
        return cls(
            name=_typed(data, "name", str),
            version=_typed(data, "version", str),
            created=_typed(data, "created", str),
            preprocessing=_build(Preprocessing, _section(data, "preprocessing"), "preprocessing"),
            outputs=_build(OutputSpec, outputs, "outputs"),
            members=tuple(_build(Member, m, "members[]") for m in _typed(data, "members", list)),
            files=dict(files),
            metrics=dict(_optional_section(data, "metrics")),
            provenance=dict(_optional_section(data, "provenance")),
            schema_version=version,
        )

    def write(self, path: Path) -> None:
        """Write atomically (a reader never sees a half-written manifest)."""
        from .files import atomic_write_text

        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def read(cls, path: Path) -> Manifest:
        path = Path(path)
        if path.exists() and not path.is_file():
            raise BundleError(f"{path}: not a regular file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"{path}: no manifest.json; is this a svdh bundle directory?") from None
        except RecursionError:
            raise BundleError(f"{path}: manifest is nested too deeply to be a svdh manifest") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: manifest is not readable JSON ({exc})") from None
        return cls.from_dict(data)


def _interval(data: Any) -> IntervalCalibration:
    if isinstance(data, Mapping) and isinstance(data.get("scores"), list):
        data = {**data, "scores": tuple(data["scores"])}
    return _build(IntervalCalibration, data, "outputs.intervals[]")


def _change(data: Any) -> ChangeCalibration:
    if isinstance(data, Mapping) and isinstance(data.get("scores"), list):
        data = {**data, "scores": tuple(data["scores"])}
    return _build(ChangeCalibration, data, "outputs.changes[]")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(f"invalid manifest: {message}")


def _typed(data: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in data:
        raise BundleError(f"invalid manifest: missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise BundleError(f"invalid manifest: field {key!r} must be {kind.__name__}, found {type(value).__name__}")
    return value


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _typed(data, key, dict)


def _optional_section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return _typed(data, key, dict) if key in data else {}


def dataclass_from_mapping(kind: type, data: Any, where: str) -> Any:
    """Construct the dataclass ``kind`` from a mapping; ``ValueError`` names unknown keys or wrong values.

    Shared by every reader of svdh's JSON and TOML files (manifests, checkpoints, recipes).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a table/object")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    _check_scalar_types(kind, data, where)
    try:
        return kind(**data)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except BundleError as exc:
        raise ValueError(str(exc).removeprefix("invalid manifest: ")) from None


def _check_scalar_types(kind: type, data: Mapping[str, Any], where: str) -> None:
    """Fields declared int, float, str or bool hold exactly that (an int is a float too; no bool is a
    number; no NaN or infinity), so a wrong type is reported by name, not met later as a crash."""
    try:
        hints = typing.get_type_hints(kind)
    except Exception:  # an annotation that cannot be resolved here: the dataclass checks itself
        return
    for name, value in data.items():
        hint = hints.get(name)
        if hint is bool:
            ok = isinstance(value, bool)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                raise ValueError(f"{where}.{name} must be a finite number, found {value!r}")
        elif hint is str:
            ok = isinstance(value, str)
        else:
            continue
        if not ok:
            raise ValueError(f"{where}.{name} must be {hint.__name__}, found {type(value).__name__}")


def _build(kind: type, data: Any, where: str) -> Any:
    try:
        return dataclass_from_mapping(kind, data, where)
    except ValueError as exc:
        raise BundleError(f"invalid manifest: {exc}") from None
