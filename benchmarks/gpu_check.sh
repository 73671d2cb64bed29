#!/usr/bin/env bash
# One command for an NVIDIA GPU box: the GPU tests and the GPU benchmarks (a few minutes), then a JSON summary.
#
#   benchmarks/gpu_check.sh            # from the repository root, after `python3 -m pip install -r requirements-dev.txt`
#
# Writes benchmarks/results/gpu-check.json: the GPU, the test outcomes (each skip with its reason), the
# benchmark medians per backend and batch size, and the gate's rules (TensorRT FP16 batch 1 <= 0.5 x torch
# eager FP32 on the same GPU, when a TensorRT engine for this GPU is in the default bundle). Exit code 0 when
# the tests and the gate pass.
set -uo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
mkdir -p "$results"

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
if [ -z "$gpu" ]; then
    echo "gpu_check: no NVIDIA GPU (nvidia-smi found none)" >&2
    exit 2
fi
echo "gpu_check: $gpu"

timeout 240 python3 -m pytest -m gpu tests -q -rs -p no:cacheprovider --junitxml="$results/gpu-tests.xml"
tests_rc=$?
timeout 180 python3 benchmarks/gate.py
gate_rc=$?

python3 - "$gpu" "$tests_rc" "$gate_rc" <<'PY'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results = Path("benchmarks/results")
gpu, tests_rc, gate_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cases = []
junit = results / "gpu-tests.xml"
if junit.exists():
    for case in ET.parse(junit).iter("testcase"):
        outcome, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, detail = tag, (node.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "detail": detail})
summary_file = results / "summary.json"
summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
report = {"gpu": gpu, "tests_exit_code": tests_rc, "gate_exit_code": gate_rc, "tests": cases, "benchmarks": summary}
(results / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: wrote {results / 'gpu-check.json'}")
PY
[ "$tests_rc" -eq 0 ] && [ "$gate_rc" -eq 0 ]
