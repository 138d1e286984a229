"""Host time and GPU time per call of the mLSTM kernels, ours next to NX-AI's and torch SDPA, in one run.

`triton.testing.do_bench` (the kernel benchmark's and the NX-AI anchor script's timer) times calls back to back, so a
call whose Python and launch work outlasts its GPU work measures the host. This script separates the two, for
forward + backward (`out.sum().backward()`, bf16, the anchor recipe's inputs):
- host: wall time per call of `--queued` calls issued while the GPU is still busy with a sleep kernel, so that no
  call waits for the GPU;
- GPU: CUDA-event time per call over `--timed` calls queued behind a sleep kernel, so that the GPU never waits for
  the host.
Each is the median over `--rounds` rounds; the implementations alternate within a round.

Usage (needs CUDA; NX-AI's column needs `pip install mlstm-kernels==2.0.6`):
    python benchmarks/kernel_overhead.py [--out benchmarks/results]
Merges rows into <out>/kernel_overhead.json (key: shape, implementation) and rewrites <out>/kernel_overhead.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from xlstm_ts.kernels import get_kernel

import provenance

# (B, NH, S, DH): the first four shapes of the kernel goals
SHAPES = [(1024, 4, 64, 32), (256, 8, 32, 64), (64, 4, 512, 64), (16, 4, 2048, 128)]
SLEEP_CYCLES_PER_MS = 2_000_000  # GPU clock cycles per ms for the sleep kernel (an upper clock: sleeps run longer)


def implementations() -> dict:
    """name -> fn(q, k, v, i, f) -> h, for the implementations present."""
    impls = {"ours": get_kernel("mlstm_chunkwise--triton")}
    if importlib.util.find_spec("mlstm_kernels") is not None:
        from mlstm_kernels.torch import get_mlstm_kernel

        theirs = get_mlstm_kernel("chunkwise--triton_limit_chunk")
        impls["nxai"] = lambda q, k, v, i, f: theirs(q, k, v, i, f, chunk_size=min(64, q.shape[2]))
    impls["sdpa"] = lambda q, k, v, i, f: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return impls


def host_and_gpu_ms(call, queued: int, timed: int) -> tuple[float, float]:
    """(host ms, GPU ms) per call of `call` (one call measures the host's upper bound first, to size the sleeps)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    bound_ms = (time.perf_counter() - start) * 1e3
    torch.cuda._sleep(int(2 * queued * bound_ms * SLEEP_CYCLES_PER_MS))  # busy while the host issues `queued` calls
    start = time.perf_counter()
    for _ in range(queued):
        call()
    host = (time.perf_counter() - start) * 1e3 / queued
    torch.cuda.synchronize()
    first, last = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(int(2 * timed * bound_ms * SLEEP_CYCLES_PER_MS))  # every timed call is queued before it runs
    first.record()
    for _ in range(timed):
        call()
    last.record()
    torch.cuda.synchronize()
    return host, first.elapsed_time(last) / timed


def run(args: argparse.Namespace) -> list[dict]:
    impls, rows = implementations(), []
    for B, NH, S, DH in SHAPES:
        torch.manual_seed(0)
        qkv = [torch.randn(B, NH, S, DH, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
        gates = [torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16) + shift for shift in (0.0, 3.0)]
        leaves = [x.requires_grad_() for x in qkv + gates]
        times = {name: [] for name in impls}
        for _ in range(args.rounds):
            for name, fn in impls.items():
                call = lambda fn=fn, leaves=leaves: fn(*leaves).sum().backward()  # noqa: E731
                for _ in range(args.warmup):
                    call()
                times[name].append(host_and_gpu_ms(call, args.queued, args.timed))
        for name, pairs in times.items():
            rows.append({"shape": f"{B}, {NH}, {S}, {DH}", "implementation": name,
                         "host_ms": statistics.median(p[0] for p in pairs),
                         "gpu_ms": statistics.median(p[1] for p in pairs),
                         "device": provenance.device_name("cuda"), "commit": provenance.commit_id()})  # fmt: skip
    return rows


def write_markdown(rows: list[dict], path: Path) -> None:
    """One row per shape: host / GPU ms of each implementation, and our GPU time over NX-AI's."""
    names = [n for n in ("ours", "nxai", "sdpa") if any(r["implementation"] == n for r in rows)]
    by = {(r["device"], r["shape"], r["implementation"]): r for r in rows}
    places = list(dict.fromkeys((r["device"], r["shape"]) for r in rows))  # each device's shapes, in run order
    lines = ["# mLSTM fw+bw per call: host time and GPU time", "",
             "Written by `benchmarks/kernel_overhead.py` (method in its docstring); bf16, medians over rounds. host = "
             "wall time to issue one call while the GPU is busy; GPU = CUDA-event time per call with no host gaps. "
             "A `do_bench` time is about the larger of the two. One row per device and shape.", "",
             "| B, NH, S, DH | " + " | ".join(f"{n} host / GPU (ms)" for n in names) + " | GPU ours / nxai | "
             "device, commit |",
             "|---|" + "---|" * (len(names) + 2)]  # fmt: skip
    for device, shape in places:
        cells = []
        for n in names:
            r = by.get((device, shape, n))
            cells.append("–" if r is None else f"{r['host_ms']:.3f} / {r['gpu_ms']:.3f}")
        ours, nxai = by.get((device, shape, "ours")), by.get((device, shape, "nxai"))
        ratio = f"{ours['gpu_ms'] / nxai['gpu_ms']:.2f}x" if ours and nxai else "–"
        commit = next(r["commit"] for r in rows if (r["device"], r["shape"]) == (device, shape))
        lines.append(f"| {shape} | " + " | ".join(cells) + f" | {ratio} | {device}, {commit} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10, help="calls before each measurement")
    parser.add_argument("--queued", type=int, default=10, help="calls whose issue time is the host time")
    parser.add_argument("--timed", type=int, default=50, help="calls whose mean GPU time is the GPU time")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("kernel_overhead.py times CUDA kernels: no CUDA device here.")
    rows = provenance.merge_rows(args.out / "kernel_overhead.json", run(args), ("device", "shape", "implementation"))
    write_markdown(rows, args.out / "kernel_overhead.md")
    return rows


if __name__ == "__main__":
    main()
