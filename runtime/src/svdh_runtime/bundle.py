"""Locate, verify and open model bundles (a directory with manifest.json)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError
from .manifest import MANIFEST_NAME, Manifest

MODEL_FILE = "model.onnx"


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
    """A verified bundle: its manifest and the bytes of its ONNX model."""

    path: Path
    manifest: Manifest
    model_bytes: bytes

    @property
    def model_sha256(self) -> str:
        return self.manifest.files[MODEL_FILE]


def load_bundle(path: Path | None = None) -> Bundle:
    """Read a bundle and check every file's sha256 against the manifest before use. The paired graph
    (``change.onnx``) is checked when it is opened (:class:`svdh_runtime.paired.PairedGraph`): scoring single
    films does not read it."""
    root = Path(path) if path is not None else default_bundle_path()
    if not root.is_dir():
        hint = " (the default bundle is missing: reinstall svdh-runtime)" if path is None else ""
        raise BundleError(f"{root}: not a bundle directory{hint}")
    manifest = Manifest.read(root / MANIFEST_NAME)
    if MODEL_FILE not in manifest.files:
        raise BundleError(f"{root}: manifest lists no {MODEL_FILE}")
    model_bytes = b""
    paired = manifest.outputs.paired.file if manifest.outputs.paired is not None else None
    for name, expected in manifest.files.items():
        file = (root / name).resolve()
        if root.resolve() not in file.parents:
            raise BundleError(f"{root}: manifest names a file outside the bundle: {name}")
        if file.exists() and not file.is_file():
            raise BundleError(f"{root}: {name} is not a regular file")
        if name == paired:
            if not file.is_file():
                raise BundleError(f"{root}: {name} is listed in the manifest but missing")
            continue
        try:
            data = file.read_bytes()
        except OSError:
            raise BundleError(f"{root}: {name} is listed in the manifest but missing") from None
        if sha256_bytes(data) != expected:
            raise BundleError(f"{root}: checksum mismatch for {name}; the bundle is damaged or was altered")
        if name == MODEL_FILE:
            model_bytes = data
    return Bundle(path=root, manifest=manifest, model_bytes=model_bytes)
