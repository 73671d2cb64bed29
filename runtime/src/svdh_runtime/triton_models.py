"""Models for Triton Inference Server's Python backend (``svdh-export triton`` writes their repository).

* :class:`ScoreModel` (model ``svdh``): radiograph file bytes (DICOM, PNG, JPEG, TIFF, WebP) in; the score,
  the severity probabilities, the CAM, the input-gate distance, the per-area grades and the full JSON
  record of ``svdh-run --json`` out. It reads, prepares and scores with this package, on the backend
  ``svdh-run`` would choose, after the bundle's checksums match.
* :class:`PrepareModel` and :class:`FinishModel`: the first and last steps of the ensemble ``svdh_ensemble``
  (GPU sites), whose middle step is the graph served by ``onnxruntime_onnx`` or ``tensorrt_plan``. Prepare
  turns the bytes into the model's canvas and a JSON context; finish gates and interprets the graph's
  outputs exactly as ``svdh-run`` does, and gives the same outputs as ``svdh``.

Every image of a request must be scored for the request to succeed: a file that cannot be read, or that the
input gate refuses, fails its request with the one-line reason ``svdh-run`` gives, and never the other
requests of the batch. No patient data is read.

``triton_python_backend_utils`` exists only inside Triton's Python stub, so it is imported there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .areas import grade_columns
from .bundle import Bundle, load_bundle
from .cores import usable_cores
from .errors import SvdhError
from .imageio import ImageMeta, LoadedImage
from .manifest import DEFAULT_INTERVAL_LEVEL, MANIFEST_NAME, Manifest
from .preprocess import ContentBox, Prepared
from .report import result_record
from .scoring import Scorer, ScoreResult, prepare_file
from .text import one_line

BUNDLE_DIR = "bundle"  # in each model's version directory: the bundle (svdh) or its manifest (prepare, finish)
INPUT = "image_bytes"
CONTEXT = "context"
ANSWERS = ("score", "severity_probs", "cam", "gate_distance", "areas", "result_json")
ENSEMBLE_BACKEND = "triton-ensemble"  # the backend named in the ensemble's records
MAX_LABEL = 200  # characters of a request's id kept as its images' source


def backend_utils() -> Any:
    """Triton's ``triton_python_backend_utils`` (it exists only inside Triton's Python stub)."""
    import triton_python_backend_utils as pb_utils  # only inside Triton's Python stub

    return pb_utils


@dataclass(frozen=True)
class ModelSettings:
    """What a model's config.pbtxt and repository tell it."""

    bundle_dir: Path
    backend: str = "auto"
    interval_level: float = DEFAULT_INTERVAL_LEVEL

    @classmethod
    def from_args(cls, args: dict[str, str]) -> ModelSettings:
        """From the ``args`` Triton passes to ``initialize``."""
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        bundle_dir = Path(args["model_repository"]) / str(args["model_version"]) / BUNDLE_DIR
        level = parameters.get("interval_level") or DEFAULT_INTERVAL_LEVEL
        return cls(bundle_dir, parameters.get("backend") or "auto", float(level))


class _ModelBase:
    """Shared by the three models: a private folder for request files and a pool that prepares them."""

    scorer: Scorer
    backend_name: str

    def _open_workspace(self) -> None:
        self._workspace = Path(tempfile.mkdtemp(prefix="svdh-triton-"))  # mode 0700
        self._pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="svdh-prepare")

    def finalize(self) -> None:
        """Called by Triton when the model is unloaded."""
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._workspace, ignore_errors=True)
        backend = getattr(self.scorer, "backend", None)
        if backend is not None:
            backend.close()

    def _prepare_requests(self, requests: list[Any]) -> list[list[ScoreResult]]:
        """Each request's images, read and prepared (all of them at once, on the pool)."""
        pb = backend_utils()
        work = []
        for number, request in enumerate(requests):
            items = pb.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
            label = one_line(request.request_id()[:MAX_LABEL]) or f"request {number}"  # the client's words
            work.append([(f"{label}[{i}]" if len(items) > 1 else label, bytes(item)) for i, item in enumerate(items)])
        flat = [pair for pairs in work for pair in pairs]
        prepared = iter(list(self._pool.map(self._prepare_bytes, flat)))
        return [[next(prepared) for _ in pairs] for pairs in work]

    def _prepare_bytes(self, item: tuple[str, bytes]) -> ScoreResult:
        """One file's bytes through the same reader as ``svdh-run`` (via a private temporary file)."""
        label, data = item
        handle, name = tempfile.mkstemp(dir=self._workspace)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            result = prepare_file(Path(name), self.scorer.bundle.manifest.preprocessing)
        finally:
            os.unlink(name)
        result.source = label
        if result.reason:
            result.reason = result.reason.replace(name, label)
        return result

    def _answers(self, results: list[ScoreResult]) -> Any:
        """The response of one request whose images were all scored; else its error (the first refusal)."""
        pb = backend_utils()
        refused = next((r for r in results if r.status != "ok" or r.prediction is None), None)
        if refused is not None:
            return pb.InferenceResponse(error=pb.TritonError(refused.reason or f"{refused.source}: not scored"))
        tensors = answer_tensors(results, self.scorer.bundle, self.backend_name)
        return pb.InferenceResponse(output_tensors=[pb.Tensor(name, value) for name, value in tensors.items()])


def answer_tensors(results: list[ScoreResult], bundle: Bundle, backend_name: str) -> dict[str, np.ndarray]:
    """The outputs of ``svdh`` and ``svdh_ensemble`` for one request's scored images (batch first)."""
    manifest = bundle.manifest
    predictions = [r.prediction for r in results]
    names = manifest.outputs.severity_names
    tensors = {
        "score": np.array([[p.score] for p in predictions], dtype=np.float32),
        "severity_probs": np.array([[p.probabilities[n] for n in names] for p in predictions], dtype=np.float32),
        "cam": np.stack([p.cam for p in predictions]).astype(np.float32),
        "gate_distance": np.array(
            [[np.nan if r.ood_distance is None else r.ood_distance] for r in results], dtype=np.float32
        ),
    }
    if manifest.outputs.per_area:
        columns = grade_columns()  # a hand not shown: NaN
        grades = [[np.nan if p.areas.grades[c] is None else p.areas.grades[c] for c in columns] for p in predictions]
        tensors["areas"] = np.array(grades, dtype=np.float32)
    records = [json.dumps(result_record(r, bundle, backend_name)).encode("utf-8") for r in results]
    tensors["result_json"] = np.array(records, dtype=np.object_).reshape(-1, 1)
    return tensors


class ScoreModel(_ModelBase):
    """Model ``svdh``: file bytes in, every answer out (see the module's description)."""

    def initialize(self, args: dict[str, str]) -> None:
        from .backends.selection import select_backend

        settings = ModelSettings.from_args(args)
        bundle = load_bundle(settings.bundle_dir, verify_now=True)  # every checksum, before anything is served
        selection = select_backend(settings.backend, bundle)
        self.scorer = Scorer(bundle, selection.backend, interval_level=settings.interval_level)
        self.backend_name = selection.backend.name
        self._open_workspace()
        backend_utils().Logger.log_info(
            f"svdh: {bundle.manifest.name} {bundle.manifest.version} on {self.backend_name}"
            + (f" ({selection.reason})" if selection.reason else "")
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = self._prepare_requests(requests)
        try:
            self.scorer.infer_batch([r for results in per_request for r in results])  # refused ones stay as they are
        except SvdhError as exc:  # the backend failed: every request of this batch is told why
            pb = backend_utils()
            return [pb.InferenceResponse(error=pb.TritonError(f"not scored: {exc}")) for _ in requests]
        return [self._answers(results) for results in per_request]


def _manifest_only_bundle(settings: ModelSettings) -> Bundle:
    """The bundle's manifest, for the ensemble's steps (the graph is served by the ensemble's model step)."""
    return Bundle(path=settings.bundle_dir, manifest=Manifest.read(settings.bundle_dir / MANIFEST_NAME))


class PrepareModel(_ModelBase):
    """The ensemble's first step: file bytes in; ``image`` (the model's canvas) and ``context`` out."""

    def initialize(self, args: dict[str, str]) -> None:
        settings = ModelSettings.from_args(args)
        self.scorer = Scorer(_manifest_only_bundle(settings), None, interval_level=settings.interval_level)
        self.backend_name = ENSEMBLE_BACKEND
        self._open_workspace()

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = backend_utils()
        responses = []
        for results in self._prepare_requests(requests):
            refused = next((r for r in results if r.prepared is None), None)
            if refused is not None:
                responses.append(pb.InferenceResponse(error=pb.TritonError(refused.reason or "not readable")))
                continue
            canvases = np.stack([r.prepared.canvas[None] for r in results]).astype(np.float32)
            contexts = np.array([json.dumps(context_of(r)).encode() for r in results], dtype=np.object_)
            responses.append(
                pb.InferenceResponse(
                    output_tensors=[pb.Tensor("image", canvases), pb.Tensor(CONTEXT, contexts.reshape(-1, 1))]
                )
            )
        return responses


class FinishModel(_ModelBase):
    """The ensemble's last step: the graph's outputs and the context in; the outputs of ``svdh`` out."""

    def initialize(self, args: dict[str, str]) -> None:
        settings = ModelSettings.from_args(args)
        self.scorer = Scorer(_manifest_only_bundle(settings), None, interval_level=settings.interval_level)
        self.backend_name = ENSEMBLE_BACKEND
        config = json.loads(args["model_config"])
        self._graph_outputs = [i["name"] for i in config["input"] if i["name"] != CONTEXT]

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = backend_utils()
        responses = []
        for request in requests:
            try:
                contexts = pb.get_input_tensor_by_name(request, CONTEXT).as_numpy().reshape(-1)
                results = [result_from_context(json.loads(bytes(c))) for c in contexts]
                outputs = {}
                for name in self._graph_outputs:
                    tensor = pb.get_input_tensor_by_name(request, name)
                    if tensor is not None:  # score and ood_distance arrive as [N]: their configs reshape [1]
                        outputs[name] = tensor.as_numpy()
                self.scorer.accept_outputs(outputs, results, None)  # the graph ran in another step
            except (SvdhError, ValueError, KeyError, TypeError) as exc:
                responses.append(pb.InferenceResponse(error=pb.TritonError(f"not scored: {exc}")))
                continue
            responses.append(self._answers(results))
        return responses

    def finalize(self) -> None:
        """Nothing to release: this step has no workspace and no backend."""


def context_of(result: ScoreResult) -> dict[str, Any]:
    """What the ensemble's finish step needs of a prepared image (no pixels, no patient data)."""
    meta, box = result.meta, result.prepared.box
    return {
        "source": result.source,
        "box": [box.top, box.left, box.height, box.width],
        "mm_per_pixel": result.prepared.mm_per_pixel,
        "reduction": result.image.reduction,
        "meta": {
            "format": meta.format,
            "rows": meta.rows,
            "columns": meta.columns,
            "sop_instance_uid": meta.sop_instance_uid,
            "modality": meta.modality,
            "photometric": meta.photometric,
            "pixel_spacing_mm": list(meta.pixel_spacing_mm) if meta.pixel_spacing_mm else None,
            "laterality": meta.laterality,
        },
        "timings_ms": result.timings_ms,
    }


def result_from_context(context: dict[str, Any]) -> ScoreResult:
    """A prepared result rebuilt from :func:`context_of` (its canvas is not needed after the graph)."""
    fields = dict(context["meta"])
    spacing = fields.pop("pixel_spacing_mm")
    meta = ImageMeta(**fields, pixel_spacing_mm=tuple(spacing) if spacing else None)
    empty = np.zeros((0, 0), np.float32)
    return ScoreResult(
        source=str(context["source"]),
        status="error",
        meta=meta,
        image=LoadedImage(pixels=empty, meta=meta, reduction=int(context["reduction"])),
        prepared=Prepared(canvas=empty, box=ContentBox(*context["box"]), mm_per_pixel=context["mm_per_pixel"]),
        timings_ms=dict(context["timings_ms"]),
    )
