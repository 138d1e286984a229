"""Registers, spilled bytes and shared memory of the chunk-parallel mLSTM kernels on sm_90 (H100 / H200), compiled
without a GPU, for the default knobs and each variant of `mlstm_segments.PARALLEL_VARIANTS`: which variants change
how many programs an SM holds, before any of them is timed there.

    python benchmarks/mlstm_parallel_sm90.py --out benchmarks/results [--variants WORD ...]

The launches of one bf16 forward + backward at (B, NH, S, DH) = SHAPE through the chunk-parallel path (64-step
segments, as `auto_parallel` picks them on CUDA) are recorded on the CPU (nothing runs: `kernels._testing_sm90`) and
compiled for sm_90 by Triton's compiler and ptxas. Programs per SM: the fewest that registers (64K per SM, 256 per
warp at a time), shared memory (228 KB per SM, 1 KB of it reserved per program) and warps (64 per SM) leave room
for. The default knobs give one row per kernel; a variant gives a row for each kernel whose launch options or
compiled resources differ from the default's.

Writes mlstm_parallel_sm90.json (rows merged by kind, device, kernel, shape and variant) and mlstm_parallel_sm90.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from mlstm_segments import PARALLEL_VARIANTS, knobs

from variant_report import record

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (2, 3, 2048, 128)  # B, NH, S, DH: the programs' tiles are those of (16, 4, 2048, 128); B * NH only sizes grids
SM_REGS, SM_SMEM, SM_WARPS, SMEM_RESERVED = 65536, 233472, 64, 1024  # per SM of sm_90


def recorded(settings) -> list[tuple]:
    """The (kernel, args, meta) launches of one bf16 forward + backward at SHAPE through the chunk-parallel path."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.kernels._testing import make_mlstm_inputs
    from xlstm_ts.kernels._testing_sm90 import recorded_launches

    B, NH, S, DH = SHAPE
    picked = (("triton_chunkwise_parallel", "auto_parallel", lambda *args: True),)  # as on CUDA
    with knobs((*picked, *settings)), recorded_launches() as calls:
        leaves = [x.to(torch.bfloat16).requires_grad_() for x in make_mlstm_inputs(B, NH, S, DH, DH)]
        get_kernel("mlstm_chunkwise--triton")(*leaves).float().sum().backward()
    return calls


def per_sm(warps: int, regs: int, smem: int) -> int:
    """Programs of `warps` warps, `regs` registers per thread and `smem` bytes of shared memory that one SM holds."""
    by_regs = SM_REGS // (warps * -(-regs * 32 // 256) * 256)  # registers go to warps in blocks of 256
    by_smem = SM_SMEM // (smem + SMEM_RESERVED)
    return min(by_regs, by_smem, SM_WARPS // warps)


def variant_rows(label: str, settings, default: dict[str, dict] | None) -> list[dict]:
    """One row per kernel launched with `settings` (with `default`, the default rows by kernel: only the kernels
    that differ from them)."""
    from xlstm_ts.kernels._testing_sm90 import compile_sm90

    rows = []
    for kernel, args, meta in recorded(settings):
        usage = compile_sm90(kernel, args, meta)
        options = {k: meta[k] for k in ("num_warps", "num_stages", "maxnreg") if k in meta}
        row = {"kind": "sm90", "direction": usage["kernel"] + (f" part {meta['PART']}" if "PART" in meta else ""),
               "variant": label, "shape": ", ".join(map(str, SHAPE)) + " bf16", "options": options,
               "warps": usage["num_warps"], "regs": usage["regs"], "spill_bytes": usage["stack"],
               "smem": usage["smem"], "per_sm": per_sm(usage["num_warps"], usage["regs"], usage["smem"])}  # fmt: skip
        base = (default or {}).get(row["direction"])
        fields = ("options", "regs", "spill_bytes", "smem")
        if base is None or any(row[f] != base[f] for f in fields):
            rows.append(row)
            print(row, flush=True)
    return rows


def sm90_rows(words: list[str] | None = None) -> list[dict]:
    """The default knobs' rows, then each variant's (those whose label holds one of `words`, if given)."""
    rows = variant_rows("default knobs", (), None)
    default = {r["direction"]: r for r in rows}
    for label, settings in PARALLEL_VARIANTS:
        if words is None or any(w in label for w in words):
            rows += variant_rows(label, settings, default)
    return rows


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Chunk-parallel mLSTM kernels on sm_90: registers and shared memory of each variant", "",
             "Written by `benchmarks/mlstm_parallel_sm90.py` (setup in its docstring); compiled without a GPU. A "
             "variant lists only the kernels it changes. Programs per SM from registers, shared memory and warps.", "",
             "| commit | variant | kernel | options | registers | spilled bytes | shared memory | programs per SM |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        options = ", ".join(f"{k} {v}" for k, v in r["options"].items())
        lines.append(f"| {r['commit']} | {r['variant']} | `{r['direction']}` | {options} | {r['regs']} | "
                     f"{r['spill_bytes']} | {r['smem']} | {r['per_sm']} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--variants", nargs="+", help="only the variants whose label holds one of these words")
    args = parser.parse_args(argv)
    return record(sm90_rows(args.variants), args.out, "mlstm_parallel_sm90", write_markdown, cuda=False)


if __name__ == "__main__":
    main()
