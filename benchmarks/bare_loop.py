"""The naive loop that svdh-run's batch mode is measured against: pydicom read, Pillow resize, one ONNX
Runtime session, one image at a time, nothing written. Not a product: a yardstick.

    python3 benchmarks/bare_loop.py BUNDLE FILE|FOLDER...
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(bundle: Path, inputs: list[Path]) -> None:
    import json

    import numpy as np
    import onnxruntime as ort
    import pydicom
    from PIL import Image

    manifest = json.loads((bundle / "manifest.json").read_text())
    height, width = manifest["preprocessing"]["height"], manifest["preprocessing"]["width"]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    files = [f for p in inputs for f in (sorted(p.rglob("*.dcm")) if p.is_dir() else [p])]
    for file in files:
        pixels = pydicom.dcmread(file).pixel_array.astype(np.float32)
        scale = min(height / pixels.shape[0], width / pixels.shape[1])
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        small = np.asarray(Image.fromarray(pixels, mode="F").resize(size, Image.Resampling.BILINEAR))
        low, high = np.percentile(small, [0.5, 99.5])
        canvas = np.zeros((height, width), np.float32)
        canvas[: small.shape[0], : small.shape[1]] = (np.clip((small - low) / (high - low), 0, 1) - 0.35) / 0.3
        score = session.run(None, {name: canvas[None, None]})[0]
        print(f"{file.name} {float(score[0]):.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
