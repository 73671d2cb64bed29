"""A bundle's model pre-optimised by ONNX Runtime for one kind of CPU (``svdh-export ort-optimize``).

Its session starts without graph optimisation (about 0.1 s sooner on a 2-core box) and runs the same
graph. ONNX Runtime's fully optimised graphs hold hardware-specific layouts (e.g. the NCHWc block size
follows AVX-512), so the file is used only where the ONNX Runtime version, the machine and the CPU's vector
extensions are those it was made with, and its source is the bundle's ``model.onnx``; elsewhere
``model.onnx`` is used, as without it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

from ..bundle import Bundle

OPTIMIZED_FILE = "model.ort-cpu.onnx"
PROVENANCE_KEY = "ort_cpu_optimized"  # manifest provenance: the signature it was made for, and its check
# The vector extensions that change what ONNX Runtime's CPU optimisers write (x86 and Arm).
VECTOR_EXTENSIONS = frozenset(
    {
        "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
        "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
        "asimd", "asimddp", "asimdhp", "fphp", "sve", "sve2", "i8mm", "bf16",
    }
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def cpu_signature() -> dict[str, Any] | None:
    """The ONNX Runtime version, the machine and the CPU's vector extensions; None where the CPU's features
    cannot be read (then no pre-optimised model is used)."""
    import onnxruntime

    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    if not flags:
        return None
    return {
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
        "vector_extensions": sorted(flags & VECTOR_EXTENSIONS),
    }


def fits_this_cpu(bundle: Bundle) -> bool:
    """Whether the bundle has a pre-optimised model made from its ``model.onnx`` for a CPU like this one."""
    made = bundle.manifest.provenance.get(PROVENANCE_KEY)
    if not bundle.has(OPTIMIZED_FILE) or not isinstance(made, dict):
        return False
    signature = cpu_signature()
    return (
        signature is not None
        and made.get("signature") == signature
        and made.get("source_sha256") == bundle.model_sha256
    )
