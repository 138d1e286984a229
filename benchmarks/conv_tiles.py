"""Times the causal-conv Triton kernels for each tile choice: the evidence behind the tiles in
`xlstm_ts.kernels.conv.triton_conv` (FWD_BLOCK, GRAD_BLOCK / GRAD_BLOCK_SHORT, DX_BLOCK).

    python benchmarks/conv_tiles.py --out benchmarks/results [--cases 1024,64,256 256,336,256]

A case (B, T, C) is the mLSTM block's conv: x the first C of 2C channels of a projection output (strided), 4 taps with
bias, SiLU, bf16 on a GPU (float32 under the Triton interpreter on a CPU). Rows: the forward op alone for each forward
tile, then the backward op alone (g, dw, db kernel + dx kernel + the host sums) for each g tile with the default dx
tile, and for each dx tile with the default g tile. A tile is (time steps, channels, num_warps). Timer:
`triton.testing.do_bench` on a GPU (median ms), the median of `--reps` wall-clock calls on a CPU. Writes conv_tiles.json
(rows merged by device, case, kernel and tile) and conv_tiles.md, the default tiles in bold.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import provenance

CASES = [(1024, 64, 256), (256, 336, 256)]
TILES = {
    "forward": [(16, 64, 4), (32, 64, 4), (16, 128, 4), (32, 128, 8)],
    "backward, g tiles": [(8, 64, 4), (16, 64, 4), (16, 64, 8), (32, 64, 8)],
    "backward, dx tiles": [(16, 64, 4), (32, 64, 4), (16, 128, 4), (32, 128, 8)],
}


def _timer(fn, device: str, reps: int) -> float:
    """Median ms of fn()."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=max(reps, 50))
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _set_tiles(tc, kernel: str, tile: tuple[int, int, int] | None) -> dict:
    """Point the module's tile constant(s) for `kernel` at `tile`; returns the old values to restore."""
    names = {"forward": ["FWD_BLOCK"], "backward, g tiles": ["GRAD_BLOCK", "GRAD_BLOCK_SHORT"],
             "backward, dx tiles": ["DX_BLOCK"]}[kernel]  # fmt: skip
    old = {name: getattr(tc, name) for name in names}
    for name in names:
        setattr(tc, name, tile)
    return old


def default_tile(tc, kernel: str, T: int) -> tuple[int, int, int]:
    """The tile the op takes for `kernel` at T steps with the module's settings."""
    if kernel == "forward":
        return tc.FWD_BLOCK
    if kernel == "backward, dx tiles":
        return tc.DX_BLOCK
    return tc.GRAD_BLOCK_SHORT if T <= tc.SHORT_STEPS else tc.GRAD_BLOCK


def time_case(B: int, T: int, C: int, device: str, reps: int) -> list[dict]:
    """One row per kernel and tile of TILES at (B, T, C)."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.kernels.conv import triton_conv as tc

    conv = get_kernel("causal_conv--triton")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, 2 * C, generator=gen).to(device=device, dtype=dtype)[..., :C]  # a projection's slice
    w, b = torch.randn(C, 4, generator=gen).to(device), torch.randn(C, generator=gen).to(device)
    dy = torch.randn(B, T, C, generator=gen).to(device=device, dtype=dtype)
    calls = {"forward": lambda: conv(x, w, b, "silu"),
             "backward": lambda: torch.ops.xlstm_ts.causal_conv_backward(dy, x, w, b, True)}  # fmt: skip
    rows = []
    for kernel, tiles in TILES.items():
        default = default_tile(tc, kernel, T)
        for tile in tiles:
            old = _set_tiles(tc, kernel, tile)
            try:
                ms = _timer(calls[kernel.split(",")[0]], device, reps)
            finally:
                for name, value in old.items():
                    setattr(tc, name, value)
            rows.append({"B": B, "T": T, "C": C, "kernel": kernel, "tile": "x".join(map(str, tile)),
                         "default": tile == default, "ms": round(ms, 4)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Causal-conv Triton kernels: tiles", "",
             "Written by `benchmarks/conv_tiles.py` (setup in its docstring). ms per call of the forward op or the "
             "backward op (both backward kernels and the host sums); a tile is steps x channels x warps; **bold**: "
             "the tile the op takes; the fastest after the arrow.", "",
             "| device | B, T, C | kernel | tiles (ms) | fastest | commit |", "|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["B"], r["T"], r["C"], r["kernel"]), []).append(r)
    for (device, B, T, C, kernel), group in groups.items():
        cells = [f"**{r['tile']}: {r['ms']:.3f}**" if r["default"] else f"{r['tile']}: {r['ms']:.3f}" for r in group]
        fastest = min(group, key=lambda r: r["ms"])
        lines.append(f"| {device} | {B}, {T}, {C} | {kernel} | {' / '.join(cells)} | {fastest['tile']} | "
                     f"{group[0]['commit']} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--cases", nargs="+", default=None, help="B,T,C (default: the mLSTM block's at two shapes)")
    parser.add_argument("--reps", type=int, default=5, help="timed calls on a CPU (a GPU uses do_bench)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = [tuple(map(int, c.split(","))) for c in args.cases] if args.cases else CASES
    common = {"device": provenance.device_name(device), "commit": provenance.commit_id()}
    rows = [{**common, **row} for B, T, C in cases for row in time_case(B, T, C, device, args.reps)]
    merged = provenance.merge_rows(args.out / "conv_tiles.json", rows, ("device", "B", "T", "C", "kernel", "tile"))
    write_markdown(merged, args.out / "conv_tiles.md")
    print((args.out / "conv_tiles.md").read_text())
    return rows


if __name__ == "__main__":
    main()
