"""Latency gate: run the CPU benchmarks and fail on ratios measured in the same run.

    python3 benchmarks/gate.py            # run benchmarks/, write benchmarks/results/cpu.json, check
    python3 benchmarks/gate.py --check F  # only check an existing pytest-benchmark JSON file

Rules (medians):
  * warm end-to-end per image <= 1.2 x (read + preprocess + bare backend call, each measured alone);
  * a cold whole-process ``svdh-run sample.dcm`` <= 1.0 s.
Exit code 0 when every rule holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cpu.json"
MAX_OVERHEAD = 1.2
MAX_COLD_S = 1.0


def medians(path: Path) -> dict[str, float]:
    """Median seconds per benchmark name."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {b["name"]: float(b["stats"]["median"]) for b in data["benchmarks"]}


def check(times: dict[str, float]) -> list[tuple[str, float, float, bool]]:
    """(rule, measured, limit, passed) for every rule."""
    parts = times["test_read_dicom"] + times["test_preprocess"] + times["test_inference_batch1"]
    overhead = times["test_warm_end_to_end"] / parts
    cold = times["test_cold_process"]
    return [
        ("warm end-to-end / (read + preprocess + backend)", overhead, MAX_OVERHEAD, overhead <= MAX_OVERHEAD),
        ("cold svdh-run sample.dcm (s)", cold, MAX_COLD_S, cold <= MAX_COLD_S),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, help="check this pytest-benchmark JSON instead of running")
    args = parser.parse_args()
    path = args.check
    if path is None:
        path = RESULTS
        path.parent.mkdir(exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(HERE),
            "--benchmark-only",
            f"--benchmark-json={path}",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        if subprocess.run(command).returncode != 0:
            print("benchmarks failed to run", file=sys.stderr)
            return 1
    times = medians(path)
    print("stage medians (ms): " + ", ".join(f"{k.removeprefix('test_')} {v * 1000:.1f}" for k, v in times.items()))
    failed = False
    for rule, value, limit, passed in check(times):
        print(f"{'PASS' if passed else 'FAIL'}  {rule}: {value:.3f} (limit {limit})")
        failed |= not passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
