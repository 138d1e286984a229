"""Where a benchmark row was measured: the device and the commit of the code (shared by the benchmark scripts)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch


def device_name(accelerator: str) -> str:
    """The GPU's name for accelerator "gpu"/"cuda" when CUDA is there, else "CPU (<processor>, <threads> threads)"."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or 'x86'}, {torch.get_num_threads()} threads)"


def commit_id() -> str:
    """The short hash of the checked-out commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
