"""Latency gate: run the benchmarks and fail on ratios measured in the same run, never on absolute model times.

    python3 benchmarks/gate.py                 # run benchmarks/, write benchmarks/results/, check the rules
    python3 benchmarks/gate.py --check F [F..] # only check existing pytest-benchmark JSON files

Rules:
  * warm end-to-end per image <= 1.2 x (read + preprocess + bare backend call, each measured alone), on the
    fastest round of each (interference from other work on the machine only ever adds time, so minima give
    the intrinsic overhead; medians swung from 0.81 to 1.09 with a test suite running beside the benchmarks);
  * (medians from here on) a cold whole-process ``svdh-run sample.dcm`` <= 1.0 s (the product promise on a 2-core CPU; the
    run with ``--out``, which also writes the overlay and reports, is measured and shown, not gated);
  * a cold ``svdh-run`` of a 2500x2000 JPEG 2000 lossless DICOM <= 1.0 s;
  * where a GPU and a TensorRT engine are present: TensorRT FP16 batch-1 model time
    <= 0.5 x torch eager FP32 batch-1 on the same GPU.
The stage benchmarks run first, in their own process, so that the torch
baselines' worker threads cannot slow them. Writes ``results/stages.json``,
``results/backends.json`` (pytest-benchmark) and ``results/summary.json``.
Exit code 0 when every rule holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SUITES = {"stages": "test_runtime_stages.py", "backends": "test_backends.py"}
MAX_OVERHEAD = 1.2
MAX_COLD_S = 1.0
MAX_TENSORRT_VS_TORCH = 0.5


def statistic(paths: list[Path], name: str = "median") -> dict[str, float]:
    """Seconds per benchmark name (``median`` or ``min`` of its rounds) over the given pytest-benchmark files."""
    times = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        times.update({b["name"]: float(b["stats"][name]) for b in data["benchmarks"]})
    return times


def check(times: dict[str, float], fastest: dict[str, float] | None = None) -> list[tuple[str, float, float, bool]]:
    """(rule, measured, limit, passed) for every rule whose benchmarks ran (``fastest``: minima, for the overhead)."""
    rules = []
    fastest = fastest or times
    stages = ("test_read_dicom", "test_preprocess", "test_inference_batch1", "test_warm_end_to_end")
    if all(name in fastest for name in stages):
        parts = fastest["test_read_dicom"] + fastest["test_preprocess"] + fastest["test_inference_batch1"]
        overhead = fastest["test_warm_end_to_end"] / parts
        rules.append(("warm end-to-end / (read + preprocess + backend)", overhead, MAX_OVERHEAD))
    if "test_cold_process" in times:
        rules.append(("cold svdh-run sample.dcm (s)", times["test_cold_process"], MAX_COLD_S))
    if "test_cold_process_jpeg2000" in times:
        rules.append(
            ("cold svdh-run, 2500x2000 JPEG 2000 lossless (s)", times["test_cold_process_jpeg2000"], MAX_COLD_S)
        )
    tensorrt, torch = times.get("test_model[tensorrt-fp16-b1]"), times.get("test_model[torch-eager-fp32-cuda-b1]")
    if tensorrt is not None and torch is not None:
        rules.append(("TensorRT FP16 / torch eager FP32, batch 1, same GPU", tensorrt / torch, MAX_TENSORRT_VS_TORCH))
    return [(rule, value, limit, value <= limit) for rule, value, limit in rules]


def backend_table(times: dict[str, float]) -> list[str]:
    """Markdown rows: backend, batch 1 and batch 8 median model time (ms), ms per image at batch 8."""
    rows = ["| backend | batch 1 (ms) | batch 8 (ms) | per image at 8 (ms) |", "|---|---|---|---|"]
    backends = sorted({n[len("test_model[") :].rsplit("-b", 1)[0] for n in times if n.startswith("test_model[")})
    for backend in backends:
        one, eight = times.get(f"test_model[{backend}-b1]"), times.get(f"test_model[{backend}-b8]")
        cells = [f"{v * 1000:.2f}" if v is not None else "—" for v in (one, eight)]
        rows.append(
            f"| {backend} | {cells[0]} | {cells[1]} | {eight * 125:.2f} |"
            if eight
            else f"| {backend} | {cells[0]} | — | — |"
        )
    return rows


def run_suites() -> list[Path]:
    RESULTS.mkdir(exist_ok=True)
    paths = []
    for name, suite in SUITES.items():
        path = RESULTS / f"{name}.json"
        command = [sys.executable, "-m", "pytest", str(HERE / suite), "--benchmark-only", f"--benchmark-json={path}"]
        if subprocess.run([*command, "-q", "-rs", "-p", "no:cacheprovider"], cwd=HERE).returncode != 0:
            raise SystemExit(f"benchmarks in {suite} failed to run")
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, nargs="+", help="check these pytest-benchmark JSON files instead")
    args = parser.parse_args()
    paths = args.check or run_suites()
    times, fastest = statistic(paths, "median"), statistic(paths, "min")
    stage_times = {k.removeprefix("test_"): round(v * 1000, 2) for k, v in times.items() if "[" not in k}
    print("stage medians (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in stage_times.items()))
    print("\n".join(backend_table(times)))
    results = check(times, fastest)
    failed = False
    for rule, value, limit, passed in results:
        print(f"{'PASS' if passed else 'FAIL'}  {rule}: {value:.3f} (limit {limit})")
        failed |= not passed
    summary = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "system": platform.system(),
        },
        "medians_ms": {k: round(v * 1000, 3) for k, v in times.items()},
        "minima_ms": {k: round(v * 1000, 3) for k, v in fastest.items()},
        "rules": [{"rule": r, "value": round(v, 4), "limit": lim, "passed": p} for r, v, lim, p in results],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
