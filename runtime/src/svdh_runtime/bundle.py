"""Locate, verify and open model bundles (a directory with manifest.json)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError
from .manifest import MANIFEST_NAME, Manifest

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # ONNX Runtime static quantization for CPUs (svdh-export int8)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The demonstration bundle shipped inside svdh-runtime."""
    return Path(__file__).resolve().parent / "default_bundle"


@dataclass(frozen=True)
class Bundle:
    """A bundle: its manifest and its files, each read and checked against the manifest's sha256 before
    use (:meth:`read_verified`)."""

    path: Path
    manifest: Manifest
    _verified: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_sha256(self) -> str:
        return self.manifest.files[MODEL_FILE]

    @property
    def model_bytes(self) -> bytes:
        """The FP32 ONNX model, verified."""
        return self.read_verified(MODEL_FILE)

    def has(self, name: str) -> bool:
        """Whether the manifest lists the file ``name``."""
        return name in self.manifest.files

    def read_verified(self, name: str) -> bytes:
        """The bytes of a file the manifest lists, once they match its sha256 (kept for the next call)."""
        if name not in self._verified:
            self._verified[name] = _read_checked(self.path, name, self.manifest.files.get(name))
        return self._verified[name]


def _read_checked(root: Path, name: str, expected: str | None) -> bytes:
    if expected is None:
        raise BundleError(f"{root}: manifest lists no {name}")
    try:
        data = (root / name).read_bytes()
    except OSError:
        raise BundleError(f"{root}: {name} is listed in the manifest but missing") from None
    if sha256_bytes(data) != expected:
        raise BundleError(f"{root}: checksum mismatch for {name}; the bundle is damaged or was altered")
    return data


def load_bundle(path: Path | None = None, verify_now: bool = True) -> Bundle:
    """Read a bundle's manifest and check that every file it lists is a regular file inside the bundle.

    ``verify_now``: also read every file and check its sha256 now (the paired graph ``change.onnx`` is
    checked when it is opened, :class:`svdh_runtime.paired.PairedGraph`: scoring single films does not read
    it). Without it, each file is checked when it is first read (:meth:`Bundle.read_verified`), so that a
    run reads only the model it uses (a quicker start)."""
    root = Path(path) if path is not None else default_bundle_path()
    if not root.is_dir():
        hint = " (the default bundle is missing: reinstall svdh-runtime)" if path is None else ""
        raise BundleError(f"{root}: not a bundle directory{hint}")
    manifest = Manifest.read(root / MANIFEST_NAME)
    if MODEL_FILE not in manifest.files:
        raise BundleError(f"{root}: manifest lists no {MODEL_FILE}")
    bundle = Bundle(path=root, manifest=manifest)
    paired = manifest.outputs.paired.file if manifest.outputs.paired is not None else None
    for name in manifest.files:
        file = (root / name).resolve()
        if root.resolve() not in file.parents:
            raise BundleError(f"{root}: manifest names a file outside the bundle: {name}")
        if file.exists() and not file.is_file():
            raise BundleError(f"{root}: {name} is not a regular file")
        if not file.is_file():
            raise BundleError(f"{root}: {name} is listed in the manifest but missing")
        if verify_now and name == MODEL_FILE:
            bundle.read_verified(name)  # kept: every use of the bundle needs it
        elif verify_now and name != paired:
            _read_checked(root, name, manifest.files[name])
    return bundle
