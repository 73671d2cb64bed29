"""Version 1 beside version 2: the same patients (the same seed draws the same grades), at full resolution
and as the model sees them (the default bundle's canvas).

    python3 reports/phantom-v2/side_by_side.py [--seed 2] [--patients 3] [--out reports/phantom-v2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from svdh_runtime.bundle import load_bundle  # noqa: E402
from svdh_runtime.imageio import read_image  # noqa: E402
from svdh_runtime.preprocess import prepare_loaded  # noqa: E402
from svdh_trainer.phantom.generate import generate  # noqa: E402


def _shown(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, (0.5, 99.5))
    return np.clip((pixels - low) / max(high - low, 1e-6), 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    spec = load_bundle(None).manifest.preprocessing
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for realism in (1, 2):
            folders[realism] = Path(scratch) / f"v{realism}"
            generate(folders[realism], args.patients, args.seed, workers=1, realism=realism)
        figure, axes = plt.subplots(args.patients, 4, figsize=(16, 3.4 * args.patients), dpi=110)
        for row in range(args.patients):
            name = f"S{args.seed}-{row:05d}.dcm"
            for column, realism in enumerate((1, 2)):
                image = read_image(folders[realism] / "images" / name)
                canvas = prepare_loaded(image, spec).canvas
                full, small = axes[row, column * 2], axes[row, column * 2 + 1]
                full.imshow(_shown(image.pixels), cmap="gray")
                small.imshow(_shown(canvas), cmap="gray")
                full.set_title(f"{name[:-4]} version {realism}, {image.pixels.shape[1]}x{image.pixels.shape[0]}")
                small.set_title(f"version {realism}, model input {canvas.shape[1]}x{canvas.shape[0]}")
                for axis in (full, small):
                    axis.set_axis_off()
        figure.tight_layout()
        out = args.out / "side-by-side.png"
        figure.savefig(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
