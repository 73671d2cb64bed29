"""Paired comparison of two bundles on the same labelled images: RMSE difference with a bootstrap 95 % CI.

    python3 reports/ablation/paired.py data/holdout BUNDLE_A BUNDLE_B [BUNDLE_A2 BUNDLE_B2 ...]

Bundles come in (A, B) pairs (e.g. without and with the per-area head, one
pair per seed); the difference is RMSE(B) - RMSE(A) per pair and pooled over
the pairs (per-image squared errors averaged over the pairs first).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from svdh_runtime.backends import create_backend
from svdh_runtime.bundle import load_bundle
from svdh_runtime.imageio import read_image
from svdh_runtime.preprocess import prepare_loaded


def squared_errors(bundle_path: Path, data: Path, ids: list[str], truth: np.ndarray) -> np.ndarray:
    bundle = load_bundle(bundle_path)
    backend = create_backend("onnxruntime", bundle)
    spec = bundle.manifest.preprocessing
    scores = [
        float(
            backend.infer(prepare_loaded(read_image(data / "images" / f"{i}.dcm"), spec).canvas[None, None])["score"][0]
        )
        for i in ids
    ]
    return (np.clip(scores, 0.0, 280.0) - truth) ** 2


def rmse_difference(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, rounds: int = 2000) -> dict:
    """RMSE(b) - RMSE(a) on the same images, with a paired bootstrap 95 % CI."""
    picks = rng.integers(0, len(a), (rounds, len(a)))
    resampled = np.sqrt(b[picks].mean(1)) - np.sqrt(a[picks].mean(1))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {
        "rmse_a": round(float(np.sqrt(a.mean())), 3),
        "rmse_b": round(float(np.sqrt(b.mean())), 3),
        "difference": round(float(np.sqrt(b.mean()) - np.sqrt(a.mean())), 3),
        "ci95": [round(float(low), 3), round(float(high), 3)],
        "share_of_rounds_b_better": round(float((resampled < 0).mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("bundles", type=Path, nargs="+")
    args = parser.parse_args()
    if len(args.bundles) % 2:
        parser.error("bundles come in (A, B) pairs")
    with (args.data / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ids = [r["Patient_ID"] for r in rows]
    truth = np.array([float(r["Overall_Tol"]) for r in rows])
    rng = np.random.default_rng(0)
    pairs = [
        (squared_errors(a, args.data, ids, truth), squared_errors(b, args.data, ids, truth))
        for a, b in zip(args.bundles[::2], args.bundles[1::2])
    ]
    result = {f"pair {k + 1}": rmse_difference(a, b, rng) for k, (a, b) in enumerate(pairs)}
    if len(pairs) > 1:
        pooled_a = np.mean([a for a, _ in pairs], axis=0)
        pooled_b = np.mean([b for _, b in pairs], axis=0)
        result["pooled"] = rmse_difference(pooled_a, pooled_b, rng)
    print(json.dumps({"data": str(args.data), "n": len(ids), **result}, indent=1))


if __name__ == "__main__":
    main()
