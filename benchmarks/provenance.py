"""Where a benchmark row was measured: the device and the commit of the code (shared by the benchmark scripts)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

ACCELERATORS = ("auto", "cpu", "gpu")


def accelerator(name: str) -> str:
    """The argparse type of --accelerator: "cpu" or "gpu" as given, "auto" the GPU when CUDA is available, else the
    CPU (so the recorded device is the one that trained)."""
    if name not in ACCELERATORS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(ACCELERATORS)}, got {name!r}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def add_accelerator_option(parser: argparse.ArgumentParser) -> None:
    """--accelerator auto|cpu|gpu, default auto, resolved to cpu or gpu while parsing (`accelerator`)."""
    parser.add_argument("--accelerator", type=accelerator, default="auto",
                        help="auto (default: the GPU when CUDA is available, else the CPU), cpu or gpu")  # fmt: skip


def device_name(accelerator: str) -> str:
    """The GPU's name for accelerator "gpu"/"cuda" when CUDA is there, else "CPU (<processor>, <threads> threads)"."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or 'x86'}, {torch.get_num_threads()} threads)"


def commit_id() -> str:
    """The short hash of the checked-out commit, or "unknown" outside a git checkout. $XLSTM_TS_COMMIT, when set,
    wins: a copy of the tree run on another machine may carry stale or no git metadata, so the caller names the
    commit it copied."""
    if os.environ.get("XLSTM_TS_COMMIT"):
        return os.environ["XLSTM_TS_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def merge_rows(path: Path, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Merge `rows` into the JSON list at `path` and write it back: an old row with the same values of the `key`
    fields as a new one is replaced. Returns the merged rows (old ones first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else []
    ident = lambda r: tuple(r[k] for k in key)  # noqa: E731
    new = {ident(r) for r in rows}
    merged = [r for r in old if ident(r) not in new] + rows
    path.write_text(json.dumps(merged, indent=1))
    return merged
