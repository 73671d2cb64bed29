"""What each group of version-2 features adds: the shipped default bundle (trained on version 1) on the same
patients drawn with one group switched off at a time, against the exact grades and the readers' mean.

    python3 reports/phantom-v2/ablation.py [--n 100] [--seed 2] [--out reports/phantom-v2/ablation.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from svdh_trainer.evaluate import evaluate_bundle
from svdh_trainer.phantom.clinic import ClinicRanges
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.morphology import Realism

NO_CLINIC = ClinicRanges(
    scatter_to_primary=(0.0, 0.0), grid_share=0.0, unsharp_share=0.0, sigmoid_share=0.0, text_share=0.0,
    collimation_margin_mm=(0.0, 0.0), fingertip_cut_share=0.0, trabecular_strength=(0.0, 0.0), film_share=0.0,
    black_shutter_share=0.0,
)  # fmt: skip
NO_CONFOUNDERS = Realism(
    dip_oa_by_age=(1000.0, 1.0), fracture=0.0, hardware=0.0, flexed_finger=0.0, crossed_little_finger=0.0,
    rotated_thumb=0.0, extra_sesamoids=0.0,
)  # fmt: skip
NO_DISEASE_LOOKS = Realism(swelling_per_inflamed_joint=0.0, cyst_share=0.0, pencil_in_cup_share=0.0,
                           ulnar_deviation_from_severity=2.0)  # fmt: skip
VARIANTS = {
    "version 1": {"realism": 1},
    "version 2": {},
    "version 2 without the clinics (scatter, collimation, grid, processing, text, films, trabeculae)": {
        "clinic": NO_CLINIC
    },
    "version 2 without the confounders (DIP OA, fractures, hardware, finger positions)": {"features": NO_CONFOUNDERS},
    "version 2 without RA's other looks (swelling, cysts, pencil-in-cup, deviation)": {"features": NO_DISEASE_LOOKS},
    "version 2, clinics only (no confounders, no other looks)": {
        "features": replace(
            NO_CONFOUNDERS,
            swelling_per_inflamed_joint=0.0,
            cyst_share=0.0,
            pencil_in_cup_share=0.0,
            ulnar_deviation_from_severity=2.0,
        )
    },  # fmt: skip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "ablation.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, options in VARIANTS.items():
            folder = Path(scratch) / str(len(rows))
            generate(folder, args.n, args.seed, **options)
            metrics = evaluate_bundle(None, folder, bootstrap=500, ignore_gate=True)
            exact = next((r for r in metrics.get("agreement", []) if r["pair"] == "model vs exact grades"), None)
            row = {"variant": name, "n": metrics["n"], "pcc": metrics["pcc"], "rmse": metrics["rmse"],
                   "rmse_ci": metrics.get("rmse_ci"), "gate_would_reject": metrics.get("gate_would_reject", 0)}  # fmt: skip
            if exact is not None:
                row.update(rmse_exact=exact["rmse"], rmse_exact_ci=exact.get("rmse_ci"), pcc_exact=exact["pcc"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
