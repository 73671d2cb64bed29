"""The bundle's paired graph: two films of one patient side by side -> the change of every area.

Bundles with ``outputs.paired`` carry ``change.onnx`` (see ``svdh-export
add-change``): baseline and follow-up canvases, prepared exactly as for
scoring, give each area's change (never negative), the hands the follow-up
shows and the change's CAM. The file is checked against the manifest's sha256
before ONNX Runtime loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .areas import HANDS, grade_columns
from .bundle import Bundle, sha256_bytes
from .errors import BackendError, BundleError

COLUMNS = grade_columns()


@dataclass(frozen=True)
class PairedChange:
    """What the paired graph says of one pair of films."""

    areas: dict[str, float | None]  # column -> change (grade points); None for a hand the films do not show
    shown: tuple[str, ...]
    cam: np.ndarray  # [h, w] on the model canvas grid

    @property
    def total(self) -> float:
        return float(sum(v for v in self.areas.values() if v is not None))

    def kind(self, marker: str) -> float:
        """The change of the erosion (``_E__``) or narrowing (``_J__``) areas shown."""
        return float(sum(v for c, v in self.areas.items() if v is not None and marker in c))


class PairedGraph:
    """An ONNX Runtime session over the bundle's verified ``change.onnx``."""

    def __init__(self, bundle: Bundle, threads: int | None = None) -> None:
        import onnxruntime as ort

        spec = bundle.manifest.outputs.paired
        if spec is None:
            raise BundleError(f"{bundle.path}: the bundle has no paired graph")
        path = bundle.path / spec.file
        if bundle.path.resolve() not in path.resolve().parents or not path.is_file():
            raise BundleError(f"{bundle.path}: {spec.file} is missing or not a regular file inside the bundle")
        data = path.read_bytes()
        if sha256_bytes(data) != bundle.manifest.files.get(spec.file):
            raise BundleError(f"{bundle.path}: checksum mismatch for {spec.file}; the bundle is damaged or was altered")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as exc:
            raise BackendError(
                f"ONNX Runtime cannot load the paired graph ({' '.join(str(exc).split())[:200]})"
            ) from None

    def change(self, before: np.ndarray, after: np.ndarray) -> PairedChange:
        """The change from the ``before`` canvas to the ``after`` canvas (``[H, W]`` each)."""
        feed = {
            "baseline": np.ascontiguousarray(before[None, None], dtype=np.float32),
            "followup": np.ascontiguousarray(after[None, None], dtype=np.float32),
        }
        try:
            areas, hands, cam = self._session.run(["change_areas", "hands", "change_cam"], feed)
        except Exception as exc:
            raise BackendError(
                f"ONNX Runtime failed on the paired graph ({' '.join(str(exc).split())[:200]})"
            ) from None
        shown = tuple(h for h, p in zip(HANDS, hands[0]) if p > 0.5)
        values = {c: (float(v) if c.split("_", 1)[0] in shown else None) for c, v in zip(COLUMNS, areas[0])}
        return PairedChange(values, shown, cam[0])

    def close(self) -> None:
        self._session = None
