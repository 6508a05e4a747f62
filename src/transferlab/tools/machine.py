"""The platform a run was computed on: what decides its last bits (no TensorFlow import).

Same params on the same platform give the same bits; on another CPU, SIMD paths of Eigen and
OpenBLAS round differently and training amplifies a last bit into another stopping epoch. So a
committed run records its platform (`reports/conclusions.json`), and `transferlab.tools.verify` checks
bits only where the platform is the same, conclusions elsewhere.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scipy", "scikit-learn")
# The CPU features whose kernels change float results (the rest of the flags still go into the digest).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")
NUMERIC_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "OPENBLAS_CORETYPE")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """(model name, flags) of the first processor; ("", []) where /proc/cpuinfo does not exist."""
    try:
        text = path.read_text()
    except OSError:
        return platform.processor(), []
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get("model name", platform.processor()), sorted(fields.get("flags", "").split())


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def record() -> dict[str, Any]:
    """This machine's platform: CPU model, SIMD flags and a digest of all flags, OS, Python, numeric libraries and
    the environment switches that choose kernels (oneDNN, threads per op)."""
    model, flags = _cpuinfo()
    return {
        "cpu": model,
        "machine": platform.machine(),
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
        "cpu_flags_sha256": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "libraries": {name: version for name in LIBRARIES if (version := _version(name)) is not None},
        "environment": {name: os.environ.get(name, "") for name in NUMERIC_ENVIRONMENT},
    }


def differences(committed: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """`cpu: 'AMD EPYC' here, 'Intel Xeon' committed`, one per field that differs (the OS release counts)."""
    return [f"{key}: {here.get(key)!r} here, {committed.get(key)!r} committed"
            for key in dict.fromkeys([*committed, *here]) if committed.get(key) != here.get(key)]
