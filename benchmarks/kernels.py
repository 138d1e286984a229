"""GPU timings of the Triton mLSTM / sLSTM kernels next to torch SDPA (flash) and the torch references, one run.

Times forward and forward+backward (`out.sum().backward()`, as the NX-AI anchor script does) with the anchor
script's timer, `triton.testing.do_bench` (median; `--timer events` times waited-for calls instead). Inputs:
q, k, v ~ N(0, 1), i~ ~ N(0, 1), f~ ~ 3 + N(0, 1), bf16 unless noted (the anchor recipe in
../shared/reference/gpu_anchor_timings.md). One sweep of (chunk_size, num_warps) for the mLSTM kernel; the table
reports the best and the default.

The NX-AI anchors (mlstm_kernels, xlstm sLSTM CUDA) are timed by ../shared/bench/anchor_kernels.py; when that
script and its wheels are present it is run in subprocesses, `--anchor-runs` times (default 2; each row keeps its
fastest fw and fw+bw medians, which only favours the anchors), and its rows are added, otherwise the run records
that they were not available.

Usage (needs CUDA):
    python benchmarks/kernels.py [--out benchmarks/results] [--quick]
Writes kernels.json and kernels.md to --out. `--only-mlstm` times the mLSTM part (ours and NX-AI's) and keeps
the sLSTM rows of the kernels.json already in --out (`kernels_carry.py`), for runs that cannot fit the whole;
`--only-slstm` the other way round (the device's ceilings stay those measured beside the kept mLSTM rows).

    python benchmarks/kernels.py --launches
prints how many kernels one forward and one backward of the mLSTM kernel launch (torch ops that run device work
plus Triton launches, counted by xlstm_ts.kernels._launches); without CUDA it runs the Triton interpreter on
shapes cut to one batch-head and at most 32 steps (the count depends on the head sizes only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if "--launches" in sys.argv and not torch.cuda.is_available():
    # count in the Triton interpreter; it must be chosen before triton (whose library is jit code too) is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402

from xlstm_ts.kernels import get_kernel  # noqa: E402

import kernels_anchor  # noqa: E402
import kernels_carry  # noqa: E402
import kernels_report  # noqa: E402
import provenance  # noqa: E402

MLSTM_SHAPES = [(1024, 4, 64, 32), (256, 8, 32, 64), (64, 4, 512, 64), (16, 4, 2048, 128), (8, 16, 4096, 256),
                (8, 8, 8192, 512)]  # (B, NH, S, DH); heads above 128 run the default launch only (no sweep)
PEAK_SHAPE = (8, 8, 8192, 512)  # peak memory of forward+backward, ours and mlstm_kernels'
LONG_SWEEP_DH = 128  # widest head whose (chunk_size, num_warps) sweep runs
SLSTM_SHAPES = [(1024, 64, 128, 4), (256, 32, 256, 4), (64, 512, 256, 4), (16, 2048, 512, 4)]  # (B, S, D, NH)
SWEEP = [(16, 4), (32, 4), (32, 8), (64, 4), (64, 8)]  # (chunk_size, num_warps)
TIMER = "do_bench"  # set from --timer


def median_ms(fn, warmup: int, reps: int) -> float:
    """Median time of fn() in ms. With TIMER "do_bench" (default): `triton.testing.do_bench` with `warmup` and `reps`
    in milliseconds of calls, as the NX-AI anchor script times theirs (the L2 cache is cleared before each call and
    calls are queued without waiting: host launch latency is hidden only while the host issues a call faster than the
    GPU runs it; short calls, such as fw+bw at the patched shapes, measure the host instead, see results/README.md).
    With "events": reps CUDA-event-timed calls after warmup calls, each waited for, so host latency is included."""
    if TIMER == "do_bench":
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=reps, return_mode="median"))
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def fw_fwbw(fn, inputs, warmup: int, reps: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of fn(*inputs) -> tensor; the backward is out.sum().backward()."""
    t_fw = median_ms(lambda: fn(*inputs), warmup, reps)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]

    def fwbw():
        fn(*leaves).sum().backward()

    return t_fw, median_ms(fwbw, warmup, reps)


def mlstm_rows(warmup: int, reps: int, quick: bool) -> list[dict]:
    from xlstm_ts.kernels.mlstm import triton_chunkwise

    ours, ref = get_kernel("mlstm_chunkwise--triton"), get_kernel("mlstm_chunkwise--torch")
    rows = []
    for B, NH, S, DH in MLSTM_SHAPES:
        shape = {"op": "mlstm", "B": B, "NH": NH, "S": S, "DH": DH, "dtype": "bfloat16"}
        torch.manual_seed(0)
        q, k, v = (torch.randn(B, NH, S, DH, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        i = torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16)
        f = 3.0 + torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16)
        for chunk, warps in SWEEP[-2:-1] if quick else SWEEP if DH <= LONG_SWEEP_DH else []:
            triton_chunkwise.NUM_WARPS_OVERRIDE = warps
            fw, fwbw = fw_fwbw(lambda *x, c=chunk: ours(*x, chunk_size=c), (q, k, v, i, f), warmup, reps)
            rows.append({**shape, "kernel": "mlstm_chunkwise--triton", "chunk_size": chunk, "num_warps": warps,
                         "fw_ms": fw, "fwbw_ms": fwbw})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        triton_chunkwise.NUM_WARPS_OVERRIDE = None
        fw, fwbw = fw_fwbw(lambda *x: ours(*x, chunk_size=64), (q, k, v, i, f), warmup, reps)
        rows.append({**shape, "kernel": "mlstm_chunkwise--triton", "chunk_size": 64, "num_warps": "default",
                     "fw_ms": fw, "fwbw_ms": fwbw})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        fw, fwbw = fw_fwbw(sdpa, (q, k, v), warmup, reps)
        rows.append({**shape, "kernel": "sdpa_causal", "fw_ms": fw, "fwbw_ms": fwbw})
        print(json.dumps(rows[-1]), flush=True)
        if B * NH * S <= 64 * 4 * 512:
            fw, fwbw = fw_fwbw(lambda *x: ref(*x, chunk_size=64), (q, k, v, i, f), 2, max(3, reps // 4))
            rows.append({**shape, "kernel": "mlstm_chunkwise--torch", "fw_ms": fw, "fwbw_ms": fwbw})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def peak_rows() -> list[dict]:
    """Peak CUDA memory above the inputs of one forward+backward (`out.sum().backward()`) at PEAK_SHAPE, bf16: ours
    and mlstm_kernels' `chunkwise--triton_limit_chunk` when it is installed."""
    B, NH, S, DH = PEAK_SHAPE
    kernels = {"mlstm_chunkwise--triton": get_kernel("mlstm_chunkwise--triton")}
    if importlib.util.find_spec("mlstm_kernels") is not None:
        from mlstm_kernels.torch import get_mlstm_kernel

        theirs = get_mlstm_kernel("chunkwise--triton_limit_chunk")
        kernels["chunkwise--triton_limit_chunk"] = lambda *x: theirs(*x, chunk_size=64)
    rows = []
    for name, fn in kernels.items():
        torch.manual_seed(0)
        leaves = [torch.randn(B, NH, S, DH, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
        leaves += [torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2)]
        fn(*leaves).sum().backward()  # compile outside the measured call
        for x in leaves:
            x.grad = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(*leaves).sum().backward()
        torch.cuda.synchronize()
        rows.append({"op": "mlstm_peak", "B": B, "NH": NH, "S": S, "DH": DH, "dtype": "bfloat16", "kernel": name,
                     "peak_gb": (torch.cuda.max_memory_allocated() - base) / 1e9})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        del leaves
    return rows


def slstm_rows(warmup: int, reps: int) -> list[dict]:
    ours, ref = get_kernel("slstm--triton"), get_kernel("slstm--torch")
    rows = []
    for B, S, D, NH in SLSTM_SHAPES:
        DH = D // NH
        torch.manual_seed(0)
        r = torch.randn(NH, 4, DH, DH, device="cuda") / DH**0.5
        b = torch.zeros(NH, 4, DH, device="cuda")
        for dtype in (torch.bfloat16, torch.float32):
            shape = {"op": "slstm", "B": B, "S": S, "D": D, "NH": NH, "DH": DH, "dtype": str(dtype)[6:]}
            wx = torch.randn(B, S, 4, NH, DH, device="cuda", dtype=dtype)
            fw, fwbw = fw_fwbw(ours, (wx, r, b), warmup, reps)
            rows.append({**shape, "kernel": "slstm--triton", "fw_ms": fw, "fwbw_ms": fwbw})
            print(json.dumps(rows[-1]), flush=True)
            if DH > 64 and dtype == torch.bfloat16:  # fp32 recurrent matrices re-read from L2 (no change up to 64)
                fw, fwbw = fw_fwbw(get_kernel("slstm--triton_fp32r"), (wx, r, b), warmup, reps)
                rows.append({**shape, "kernel": "slstm--triton_fp32r", "fw_ms": fw, "fwbw_ms": fwbw})
                print(json.dumps(rows[-1]), flush=True)
        fw, fwbw = fw_fwbw(ref, (wx, r, b), 1, 3)
        rows.append({**shape, "kernel": "slstm--torch", "fw_ms": fw, "fwbw_ms": fwbw})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def ceilings() -> dict[str, float]:
    """The device's measured ceilings: copy bandwidth (GB/s, bytes read plus written by a 1 GiB bf16 copy) and bf16
    matmul throughput (TFLOP/s of an 8192 x 8192 x 8192 matmul), timed with `median_ms`."""
    x = torch.empty(2**29, device="cuda", dtype=torch.bfloat16)  # 1 GiB
    y = torch.empty_like(x)
    copy_ms = median_ms(lambda: y.copy_(x), 25, 100)
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mm_ms = median_ms(lambda: a @ b, 25, 100)
    return {"copy_gbs": 2 * 2**30 / copy_ms / 1e6, "bf16_tflops": 2 * n**3 / mm_ms / 1e9}


def profile_backward(path: Path) -> None:
    """Kernel-level breakdown (torch.profiler, CUDA time) of one forward+backward at the two patched shapes."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    B, NH, S, DH = MLSTM_SHAPES[0]
    q, k, v = (torch.randn(B, NH, S, DH, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    i = torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    f = (3.0 + torch.randn(B, NH, S, device="cuda", dtype=torch.bfloat16)).requires_grad_()
    B2, S2, D2, NH2 = SLSTM_SHAPES[0]
    wx = torch.randn(B2, S2, 4, NH2, D2 // NH2, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    r = (torch.randn(NH2, 4, D2 // NH2, D2 // NH2, device="cuda") / 6).requires_grad_()
    b = torch.zeros(NH2, 4, D2 // NH2, device="cuda", requires_grad=True)
    runs = {"mlstm_chunkwise--triton": lambda: get_kernel("mlstm_chunkwise--triton")(q, k, v, i, f),
            "slstm--triton": lambda: get_kernel("slstm--triton")(wx, r, b)}  # fmt: skip
    text = []
    for name, fn in runs.items():
        for _ in range(3):
            fn().sum().backward()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn().sum().backward()
            torch.cuda.synchronize()
        text.append(f"## {name}, 5 x forward+backward\n")
        text.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    path.write_text("\n".join(text))


def launch_rows(device: str) -> list[dict]:
    """Launches of one forward and one backward (as `out.sum().backward()`, without the loss's own ops) per shape."""
    from xlstm_ts.kernels._launches import LaunchCounter

    kernel = get_kernel("mlstm_chunkwise--triton")
    rows = []
    for B, NH, S, DH in MLSTM_SHAPES:
        shape = (B, NH, S, DH) if device == "cuda" else (1, 1, min(S, 32), DH)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32  # the interpreter's bf16 dots are garbage
        torch.manual_seed(0)
        leaves = [torch.randn(*shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
        leaves += [torch.randn(*shape[:3], device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
        with LaunchCounter() as forward:
            h = kernel(*leaves)
        dh = torch.ones((), device=device, dtype=h.dtype).expand_as(h)  # the stride-0 gradient of h.sum()
        with LaunchCounter() as backward:
            torch.autograd.grad(h, leaves, dh)
        rows.append({"B, NH, S, DH": (B, NH, S, DH), "counted at": shape, "forward": forward.summary(),
                     "backward": backward.summary()})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--timer", choices=["do_bench", "events"], default="do_bench",
                        help="do_bench: the anchor script's timer (warmup/reps in ms); events: waited-for calls")
    parser.add_argument("--warmup", type=int, help="warm-up ms (do_bench, default 50) or calls (events, default 10)")
    parser.add_argument("--reps", type=int, help="timed ms (do_bench, default 300) or calls (events, default 30)")
    parser.add_argument("--quick", action="store_true", help="one sweep point only")
    parser.add_argument("--profile", action="store_true", help="also write a torch.profiler breakdown")
    parser.add_argument("--launches", action="store_true", help="only print the mLSTM kernel's launch counts")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-mlstm", action="store_true", help="time the mLSTM part only and keep the sLSTM "
                      "rows of the kernels.json already in --out (benchmarks/kernels_carry.py)")
    only.add_argument("--only-slstm", action="store_true", help="time the sLSTM part only and keep the mLSTM "
                      "rows (and the device's ceilings) of the kernels.json already in --out")
    parser.add_argument("--anchor-runs", type=int, default=2, help="runs of the NX-AI anchor script; each row keeps "
                        "its fastest medians (their first shapes have come out 1.4-3.6x slow in single runs)")
    parser.add_argument("--gpu-tests-log", type=Path, help="pytest log of `pytest -m gpu tests/kernels` from this "
                        "device; its summary line is recorded with the timings")
    args = parser.parse_args()
    if args.launches:
        for row in launch_rows("cuda" if torch.cuda.is_available() else "cpu"):
            print(json.dumps(row))
        return
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/kernels.py needs a CUDA GPU; the Triton interpreter is far too slow to time.")
    global TIMER
    TIMER = args.timer
    bench = args.timer == "do_bench"
    args.warmup = args.warmup if args.warmup is not None else (50 if bench else 10)
    args.reps = args.reps if args.reps is not None else (300 if bench else 30)
    part = "mlstm" if args.only_mlstm else "slstm" if args.only_slstm else None
    peaks = None if part == "slstm" else ceilings()
    rows = [] if part == "slstm" else mlstm_rows(args.warmup, args.reps, args.quick) + peak_rows()
    rows += [] if part == "mlstm" else slstm_rows(args.warmup, args.reps)
    anchors, note = kernels_anchor.anchor_rows(part, args.anchor_runs)
    if args.profile:
        profile_backward(Path(args.out) / "profile.txt")
    meta = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
            "timer": args.timer, "warmup": args.warmup, "reps": args.reps, "anchors": note, "ceilings": peaks,
            "gpu_tests": kernels_anchor.tests_summary(args.gpu_tests_log), "commit": provenance.commit_id()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "rows": rows, "anchor_rows": anchors}
    if part is not None:
        data = kernels_carry.carry_part(data, out / "kernels.json", kept="slstm" if part == "mlstm" else "mlstm")
    (out / "kernels.json").write_text(json.dumps(data, indent=1))
    print(kernels_report.write(out / "kernels.json").read_text())


if __name__ == "__main__":
    main()
