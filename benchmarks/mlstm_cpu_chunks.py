"""Times mlstm_chunkwise--torch on the CPU for each chunk length, with and without gradients, at the sequence lengths
and head widths of patched forecasters: the evidence behind `cpu_chunk_size`, the chunk the model picks on a CPU.

    python benchmarks/mlstm_cpu_chunks.py --out benchmarks/results [--threads 2]

Rows: (S, DH) x chunk in 8, 16, 32, 64 and "one" (one chunk: S), forward + backward at 224 rows (32 windows x 7
variates) and forward alone without gradients at 896 rows, NH = 4, float32, median of `--reps` runs after one warm-up.
`rule` marks the chunk `cpu_chunk_size(S, DH)` picks. For a few cases the pick also runs without gradients over 7168
rows (an evaluation batch of 1024 windows x 7 variates), in one pass and in the kernel's batch slices. Writes
mlstm_cpu_chunks.json (rows merged by device, threads, case and chunk) and mlstm_cpu_chunks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import provenance

CASES = [(42, 8), (42, 32), (63, 8), (63, 16), (63, 32), (95, 8), (95, 16), (95, 32), (95, 64), (336, 16), (336, 32)]
CHUNKS = [8, 16, 32, 64, None]  # None: one chunk
SLICE_CASES = [(63, 8), (95, 8), (95, 32)]
SLICE_ROWS = 7168


def time_case(S: int, DH: int, chunk: int | None, grad: bool, reps: int, B: int | None = None,
              one_pass: bool = False) -> float:
    """Median ms of one call (with backward when `grad`) over B rows (default 224 with gradients, 896 without);
    `one_pass` turns the kernel's batch slices off."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.kernels._testing import make_mlstm_inputs
    from xlstm_ts.kernels.mlstm import chunkwise_torch

    kernel = get_kernel("mlstm_chunkwise--torch")
    B = B or (224 if grad else 896)
    if one_pass:
        rows, chunkwise_torch._cpu_rows = chunkwise_torch._cpu_rows, lambda *_: B
        try:
            return time_case(S, DH, chunk, grad, reps, B)
        finally:
            chunkwise_torch._cpu_rows = rows
    torch.manual_seed(0)
    x = [t.float().requires_grad_(grad) for t in make_mlstm_inputs(B, 4, S, DH, DH, f_mean=3.0)]

    def once() -> None:
        if grad:
            kernel(*x, chunk_size=chunk or S).sum().backward()
        else:
            with torch.no_grad():
                kernel(*x, chunk_size=chunk or S)

    once()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        once()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# mLSTM chunk length on the CPU", "",
             "Written by `benchmarks/mlstm_cpu_chunks.py`. mlstm_chunkwise--torch, NH = 4, float32; ms per call, "
             "forward + backward at 224 rows and forward without gradients at 896 rows. **Bold**: the chunk "
             "`cpu_chunk_size` picks (the model's choice on a CPU when `ModelConfig.chunk_size` is None); "
             "'one' = one chunk of S steps. Rows 'fw, no grad, 7168 rows': the pick over 7168 rows in one pass and "
             "in the kernel's batch slices (`_CPU_SLICE_BYTES`).", "",
             "| device | threads | S | DH | pass | 8 | 16 | 32 | 64 | one | rule / fastest | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["device"], r["threads"], r["S"], r["DH"], r["pass"]), {})[r["chunk"]] = r
    for (device, threads, S, DH, kind), by_chunk in groups.items():
        rule = next(r["rule"] for r in by_chunk.values())
        cells = []
        for chunk in ("8", "16", "32", "64", "one"):
            r = by_chunk.get(chunk)
            cell = "–" if r is None else f"{r['ms']:.0f}"
            cells.append(f"**{cell}**" if chunk == rule else cell)
        fastest = min(by_chunk.values(), key=lambda r: r["ms"])
        ratio = by_chunk[rule]["ms"] / fastest["ms"] if rule in by_chunk else float("nan")
        commit = next(iter(by_chunk.values()))["commit"]
        lines.append(f"| {device} | {threads} | {S} | {DH} | {kind} | {' | '.join(cells)} | {ratio:.2f}x "
                     f"({fastest['chunk']}) | {commit} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    from xlstm_ts.kernels.mlstm.chunkwise_torch import cpu_chunk_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", default=None, help='"S,DH;S,DH" (default: the built-in list)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [tuple(map(int, c.split(","))) for c in args.cases.split(";")] if args.cases else CASES
    common = {"device": provenance.device_name("cpu"), "threads": args.threads, "commit": provenance.commit_id()}
    rows = []
    for S, DH in cases:
        picked = cpu_chunk_size(S, DH)
        rule = "one" if picked >= S else str(picked)
        for grad in (True, False):
            for chunk in CHUNKS:
                if chunk is not None and chunk >= S:
                    continue  # the same one chunk
                ms = time_case(S, DH, chunk, grad, args.reps)
                rows.append({**common, "S": S, "DH": DH, "pass": "fw+bw" if grad else "fw, no grad",
                             "chunk": str(chunk) if chunk else "one", "rule": rule, "ms": round(ms, 2)})  # fmt: skip
                print(rows[-1], flush=True)
        if (S, DH) in SLICE_CASES:  # 7168 rows without gradients (1024 windows x 7 variates): slices or one pass
            chunk = None if rule == "one" else int(rule)
            for name, one_pass in (("one pass", True), ("slices", False)):
                ms = time_case(S, DH, chunk, False, args.reps, SLICE_ROWS, one_pass)
                rows.append({**common, "S": S, "DH": DH, "pass": f"fw, no grad, {SLICE_ROWS} rows, {name}",
                             "chunk": rule, "rule": rule, "ms": round(ms, 2)})  # fmt: skip
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    merged = provenance.merge_rows(args.out / "mlstm_cpu_chunks.json", rows,
                                   ("device", "threads", "S", "DH", "pass", "chunk"))  # fmt: skip
    write_markdown(merged, args.out / "mlstm_cpu_chunks.md")
    print((args.out / "mlstm_cpu_chunks.md").read_text())
    return rows


if __name__ == "__main__":
    main()
