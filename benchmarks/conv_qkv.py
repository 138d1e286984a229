"""The fused causal conv + q/k/v op (`conv_qkv--triton`) against the conv op and the dense q, k, v matmuls it
replaces in the mLSTM block: the evidence behind `triton_conv_qkv.ENABLED` and its tiles.

    python benchmarks/conv_qkv.py --sm90 --out benchmarks/results          # any machine: registers, spills
    python benchmarks/conv_qkv.py --kernels --step --out benchmarks/results  # on a GPU

Three kinds of rows:
- `sm90`: each tile variant's kernels compiled for sm_90 by Triton's compiler and ptxas without a GPU
  (`kernels._testing_sm90`): registers and spilled bytes per thread, shared memory per program;
- `kernel`: bf16 at the block's (B, T, C) (x_m the first C of 2C channels of a projection output, 4 taps with bias,
  SiLU, 4 x 4 blocks), the forward alone and forward + backward (gradients of x_c, q|k and v given), for the
  unfused path as the block runs it (`causal_conv--triton`, then x_c @ [Wq | Wk] and x_m @ Wv as dense matmuls) and
  for the fused op with each tile variant; CUDA-graph timings (`triton.testing.do_bench_cudagraph`, median of three);
  `diff`: the largest relative error of the outputs (or gradients) against the unfused path's;
- `step`: the compiled, graphed bf16 training step of `train_step.py` with the op off and on (the fastest tiles of
  this run's kernel rows), alternating (7 rounds of 20 steps, median).
Writes conv_qkv.json (rows merged by kind, device, direction (the kernel for sm90 rows), shape and variant) and
conv_qkv.md.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from variant_report import graphed_steps, parse_args, record, timings_lines

RESULTS = Path(__file__).resolve().parent / "results"
CASES = [(1024, 64, 256), (256, 336, 256)]
STEP_CASES = [(1024, 64, 128, "mmmm"), (1024, 64, 128, "msmm"), (256, 336, 128, "msmm")]
# variant -> tiles of `triton_conv_qkv`: (steps or rows, num_warps) of the forward, g, dx and weight-gradient kernels
VARIANTS = {
    "defaults": {},
    "fwd 32x4, g 16x4, dx 32x4, dw 64x4": {"FWD_TILE": (32, 4), "GRAD_TILE": (16, 4), "DX_TILE": (32, 4),
                                           "DW_TILE": (64, 4)},
    "fwd 64x8, g 32x8, dx 64x4, dw 128x4": {"FWD_TILE": (64, 8), "GRAD_TILE": (32, 8), "DX_TILE": (64, 4),
                                            "DW_TILE": (128, 4)},
    "fwd 32x8, dx 32x8, dw 32x4": {"FWD_TILE": (32, 8), "DX_TILE": (32, 8), "DW_TILE": (32, 4)},
    "dw rows 4096": {"DW_ROWS": 4096},
    "dw rows 256": {"DW_ROWS": 256},
}  # fmt: skip


def tiles(settings: dict):
    """The `triton_conv_qkv` settings of `settings` set, and restored afterwards (a context manager)."""
    from train_step import kernel_settings

    from xlstm_ts.kernels.conv import triton_conv_qkv as module

    return kernel_settings([(module, name, value) for name, value in settings.items()])


def block_inputs(B: int, T: int, C: int, device: str, dtype=torch.bfloat16):
    """(unfused fw, fused fw, their forward + backward) on the layouts of the mLSTM block (module docstring)."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.layers import BlockDiagonalLinear

    gen = torch.Generator().manual_seed(0)
    up = torch.randn(B, T, 2 * C, generator=gen).to(device, dtype).requires_grad_()
    taps = (torch.randn(C, 1, 4, generator=gen) / 2).to(device).requires_grad_()
    bias = torch.randn(C, generator=gen).to(device).requires_grad_()
    maps = [BlockDiagonalLinear(C, 4).to(device) for _ in range(3)]
    douts = [torch.randn(B, T, n * C, generator=gen).to(device, dtype) for n in (1, 2, 1)]
    conv, fused = get_kernel("causal_conv--triton"), get_kernel("conv_qkv--triton")
    leaves = [up, taps, bias, *(m.weight for m in maps)]

    def unfused() -> tuple[torch.Tensor, ...]:
        x_m = up[..., :C]
        x_c = conv(x_m, taps, bias, "silu")
        wqk = torch.cat([maps[0].dense_weight(), maps[1].dense_weight()], dim=1).to(dtype)
        return x_c, x_c @ wqk, x_m @ maps[2].dense_weight().to(dtype)

    def one_op() -> tuple[torch.Tensor, ...]:
        return fused(up[..., :C], taps, bias, *(m.group_weight(64).to(dtype) for m in maps), "silu")

    def backward(fw):
        return lambda: torch.autograd.grad(fw(), leaves, douts)

    return unfused, one_op, backward(unfused), backward(one_op)


def _rel(a, b) -> float:
    return max(((x.double() - y.double()).norm() / y.double().norm()).item() for x, y in zip(a, b))


def sm90_rows() -> list[dict]:
    """Registers, spills and shared memory of each variant's kernels on sm_90, compiled here (no GPU needed)."""
    from xlstm_ts.kernels._testing_sm90 import compile_sm90, recorded_launches

    rows = []
    for name, settings in VARIANTS.items():
        with tiles(settings), recorded_launches() as calls:
            _, _, _, fwbw = block_inputs(2, 64, 256, "cpu")
            fwbw()
        seen = set()
        for kernel, args, meta in calls:
            if kernel.__name__ in seen:  # the weight-gradient kernel runs twice with one signature
                continue
            seen.add(kernel.__name__)
            usage = compile_sm90(kernel, args, meta)
            rows.append({"kind": "sm90", "direction": usage["kernel"], "variant": name,
                         "shape": "T=64, C=256, bf16", "kernel": usage["kernel"],
                         "tile": f"{meta.get('BT', meta.get('BN'))} x {meta['num_warps']}", "regs": usage["regs"],
                         "spill_bytes": usage["stack"], "smem": usage["smem"]})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def kernel_rows(cases: list[tuple[int, int, int]]) -> list[dict]:
    """CUDA-graph timings of the unfused path and of every tile variant of the fused op."""
    from triton.testing import do_bench_cudagraph

    rows = []
    for case in cases:
        unfused, fused, unfused_bw, fused_bw = block_inputs(*case, "cuda")
        for direction, base, fn in (("forward", unfused, fused), ("forward + backward", unfused_bw, fused_bw)):
            ref = base()
            runs = [("conv op + dense matmuls", {}, base)] + [(f"fused, {n}", s, fn) for n, s in VARIANTS.items()]
            for name, settings, call in runs:
                with tiles(settings):
                    out = call()
                    ms = statistics.median(do_bench_cudagraph(call, rep=200) for _ in range(3))
                rows.append({"kind": "kernel", "direction": direction, "variant": name,
                             "shape": ", ".join(map(str, case)), "ms": ms, "diff": _rel(out, ref)})  # fmt: skip
                print(rows[-1], flush=True)
    return rows


def fastest(rows: list[dict]) -> str:
    """The fused variant with the lowest forward + backward time summed over the cases timed in `rows`."""
    totals: dict[str, float] = {}
    for r in rows:
        if r["kind"] == "kernel" and r["direction"] == "forward + backward" and r["variant"].startswith("fused, "):
            totals[r["variant"]] = totals.get(r["variant"], 0.0) + r["ms"]
    return min(totals, key=totals.get).removeprefix("fused, ") if totals else "defaults"


def step_rows(variant: str, cases=STEP_CASES) -> list[dict]:
    """Graphed bf16 training step with the op off and on (tiles of `variant`), alternating."""
    rows = []
    for B, S, D, pattern in cases:
        rows += graphed_steps(B, S, D, pattern, {
            "conv op + dense matmuls": lambda: tiles({"ENABLED": False}),
            f"fused, {variant}": lambda: tiles({**VARIANTS[variant], "ENABLED": True}),
        })  # fmt: skip
    return rows


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Fused causal conv + q/k/v op: tiles and the training step", "",
             "Written by `benchmarks/conv_qkv.py` (setup in its docstring).", ""]  # fmt: skip
    sm = [r for r in rows if r["kind"] == "sm90"]
    if sm:
        lines += ["## Registers on sm_90 (compiled without a GPU)", "",
                  "| commit | variant | kernel | tile (steps or rows x warps) | registers | spilled bytes | shared "
                  "memory |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['commit']} | {r['variant']} | `{r['kernel']}` | {r['tile']} | {r['regs']} | "
                  f"{r['spill_bytes']} | {r['smem']} |" for r in sm]  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines + timings_lines(rows)))


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(__doc__.splitlines()[0], argv, RESULTS, "op timings", "graphed step with the op off and on")
    rows = sm90_rows() if args.sm90 else []
    if args.kernels:
        rows += kernel_rows(CASES)
    if args.step:
        rows += step_rows(fastest(rows))
    return record(rows, args.out, "conv_qkv", write_markdown, cuda=args.kernels or args.step)


if __name__ == "__main__":
    main()
