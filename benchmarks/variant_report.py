"""Shared parts of the kernel-variant benchmarks (`mlstm_one_chunk.py`, `conv_qkv.py`): steps timed in alternating
rounds, the timings table, and recording rows (merged into <stem>.json, rendered into <stem>.md)."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import provenance

KEY = ("kind", "device", "direction", "shape", "variant")  # a rerun replaces the old row with these values


def parse_args(description: str, argv: list[str] | None, out: Path, kernels_help: str,
               step_help: str) -> argparse.Namespace:  # fmt: skip
    """--sm90 (anywhere), --kernels and --step (CUDA only: an error without it), --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sm90", action="store_true", help="registers and spills, compiled without a GPU")
    parser.add_argument("--kernels", action="store_true", help=f"{kernels_help} (CUDA)")
    parser.add_argument("--step", action="store_true", help=f"{step_help} (CUDA)")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    if (args.kernels or args.step) and not torch.cuda.is_available():
        parser.error("--kernels and --step need a CUDA device; --sm90 runs anywhere.")
    return args


def alternate(steps: dict[str, Callable[[], object]], rounds: int = 7, calls: int = 20) -> dict[str, float]:
    """Median ms per call of each step, over `rounds` rounds of `calls` calls of every step in turn (CUDA
    synchronised around each round), so that drift of the device cancels in the comparison."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                step()
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(ms) for name, ms in times.items()}


def graphed_steps(B: int, S: int, D: int, pattern: str,
                  settings: dict[str, Callable[[], contextlib.AbstractContextManager]]) -> list[dict]:  # fmt: skip
    """`step` rows: the compiled, graphed bf16 training step of `train_step.py` at (B, S, D, pattern), built and
    captured inside each of `settings` (name -> context manager factory), then timed in alternating rounds."""
    from train_step import ours, prepare

    torch.set_float32_matmul_precision("high")
    steps = {}
    for name, context in settings.items():
        with context():
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = ours(D, S, pattern, "cuda").compile_blocks()
            step, first, _ = prepare(model, torch.randn(B, S, D, device="cuda"), 3, True, True)
        steps[name] = (step, first)  # the graph keeps the launches it captured with these settings
    ms = alternate({name: step for name, (step, _) in steps.items()})
    rows = [{"kind": "step", "direction": "graphed bf16 step", "variant": name, "shape": f"{B}, {S}, {D} {pattern}",
             "ms": ms[name], "first_loss": first} for name, (_, first) in steps.items()]  # fmt: skip
    for row in rows:
        print(row, flush=True)
    return rows


def timings_lines(rows: list[dict]) -> list[str]:
    """The '## Timings' table of the `kernel` and `step` rows (none: no lines)."""
    timed = [r for r in rows if r["kind"] in ("kernel", "step")]
    if not timed:
        return []
    lines = ["## Timings", "", "| device, commit | what | shape | variant | ms | diff / first loss |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in timed:
        extra = f"{r['diff']:.1e}" if "diff" in r else f"{r['first_loss']:.5f}"
        lines.append(f"| {r['device']}, {r['commit']} | {r['direction']} | {r['shape']} | {r['variant']} | "
                     f"{r['ms']:.4f} | {extra} |")  # fmt: skip
    return lines + [""]


def record(rows: list[dict], out: Path, stem: str, markdown: Callable[[list[dict], Path], None],
           cuda: bool) -> list[dict]:  # fmt: skip
    """Add the device and commit to `rows`, merge them into out/<stem>.json (`KEY`) and rewrite out/<stem>.md with
    `markdown(all rows, path)`; returns the new rows."""
    common = {"device": provenance.device_name("cuda" if cuda else "cpu"), "commit": provenance.commit_id()}
    rows = [{**common, **r} for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    markdown(provenance.merge_rows(out / f"{stem}.json", rows, KEY), out / f"{stem}.md")
    return rows
