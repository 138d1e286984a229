"""Times the chunkwise mLSTM in Triton at long sequences with few batch * heads: the plain layout (one program per
DHV block and batch * head walks all chunks) against the layout the default rule picks (the segmented layout of
`segment_plan`, or for heads wider than 64 over 1024+ steps the chunk-parallel kernels, `auto_parallel`), and each
chunks-per-segment setting of a sweep, forward and forward + backward, bf16, in one GPU run.

    python benchmarks/mlstm_segments.py --out benchmarks/results [--shapes "1,4,8192,256;2,8,4096,512"]
    python benchmarks/mlstm_segments.py --shapes "8,16,4096,256" --sweep 1,4 --k-blocks 64,128 --value-blocks 64,128

Heads wider than 128 run in column blocks (`triton_chunkwise_ksplit.py`), which take the same layouts.
`--parallel-forward` adds three rows per shape (`triton_chunkwise_parallel.py`, `triton_chunkwise_parallel_bwd.py`):
the chunk-parallel forward of calls without gradients (forward only, its fw+bw column empty), and segments of one
and of two chunks through the chunk-parallel output and gradient kernels (fw with gradients recorded, fw+bw).
`--parallel-variants` adds a row per variant of the chunk-parallel path (`PARALLEL_VARIANTS`: warps, dot modes, the
boundary carry, paired states, the gate prefetch), each alone, in 64-step segments (`--variants WORD...`: only the
knobs whose label holds a word; `--gpu-ms`: also each call's summed kernel time on the device, which ranks
GPU-side changes where host time sets the medians). `--k-blocks` / `--value-blocks` also time every layout with
other column blocks (`ksplit.K_BLOCK`; a head wider than the block runs in column blocks) and DHV blocks of the
column-block launches (`ksplit.VALUE_BLOCK_OVERRIDE`).

Writes mlstm_segments.json (rows merged by shape and layout) and mlstm_segments.md. Needs CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

import gpu_time
import provenance

SHAPES = [(1, 4, 8192, 64), (2, 4, 4096, 128), (4, 8, 2048, 64), (8, 4, 2048, 128), (16, 4, 2048, 128),
          (1, 4, 8192, 256), (2, 8, 4096, 256), (1, 4, 4096, 512)]
SWEEP = [1, 2, 4, 8, 16]
PLAIN = 10**9  # chunks per segment beyond any sequence: one segment, the plain layout
KERNELS_KEPT = 8  # with --gpu-ms: the largest kernels of a fw+bw call kept per row (device us per call, by name)


def _inputs(shape: tuple[int, int, int, int]) -> tuple:
    """The Triton mLSTM, and bf16 inputs of a shape on the GPU (seed 0) without and with gradients: q, k, v
    (B, NH, S, DH), i, f (B, NH, S), forget gates mostly open."""
    from xlstm_ts.kernels import get_kernel
    from xlstm_ts.kernels._testing import make_mlstm_inputs

    torch.manual_seed(0)
    x = make_mlstm_inputs(*shape, shape[-1], f_mean=3.0, dtype=torch.bfloat16, device="cuda")
    return get_kernel("mlstm_chunkwise--triton"), x, [t.clone().requires_grad_() for t in x]


def time_layouts(shape: tuple[int, int, int, int], warmup: int, reps: int, sweep: list[int],
                 tiles: tuple[int | None, int | None] = (None, None)) -> list[dict]:  # fmt: skip
    """One row per layout: "plain", "auto" (the plan's choice) and "cps=N" for the sweep; with `tiles` (column
    block, DHV block of the column-block launches) set, each label ends in ", kb=K" / ", bv=V"."""
    from triton.testing import do_bench

    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    kernel, x, g = _inputs(shape)
    B, NH, S, DH = shape
    rows = []
    k_block, v_block = tiles
    suffix = (f", kb={k_block}" if k_block else "") + (f", bv={v_block}" if v_block else "")
    for name, cps in [("plain", PLAIN), ("auto", None), *((f"cps={c}", c) for c in sweep)]:
        segments.SEGMENT_CHUNKS_OVERRIDE = cps
        try:
            _set_tiles(k_block, v_block)
            fw = lambda: kernel(*x)  # noqa: E731
            fwbw = lambda: kernel(*g).sum().backward()  # noqa: E731
            fw(), fwbw()
            torch.cuda.synchronize()
            t_fw = do_bench(fw, warmup=warmup, rep=reps, return_mode="median")
            t_fb = do_bench(fwbw, warmup=warmup, rep=reps, return_mode="median")
            G, CPS, together = plan(B, NH, S, DH, x[0].device) if cps is None else (0, 0, False)
        finally:
            segments.SEGMENT_CHUNKS_OVERRIDE = None
            _set_tiles(None, None)
        if cps is None:
            name = f"auto ({G} x {CPS} chunks{', chunk-parallel' if together else ''})" if G > 1 else "auto (plain)"
        rows.append({"shape": ", ".join(map(str, shape)), "layout": name + suffix, "fw_ms": round(t_fw, 4),
                     "fwbw_ms": round(t_fb, 4)})  # fmt: skip
    return rows


def time_parallel_forward(shape: tuple[int, int, int, int], warmup: int, reps: int) -> list[dict]:
    """Three rows: the chunk-parallel forward of a call without gradients (fw+bw None: it has no backward), and the
    segmented layout with segments of one and of two chunks through the chunk-parallel output and gradient kernels,
    fw (with gradients recorded) and fw+bw."""
    from triton.testing import do_bench

    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    kernel, x, g = _inputs(shape)
    parallel.PARALLEL_FORWARD = True
    bench = lambda fn: do_bench(fn, warmup=warmup, rep=reps, return_mode="median")  # noqa: E731
    try:
        kernel(*x)
        torch.cuda.synchronize()
        key = ", ".join(map(str, shape))
        rows = [{"shape": key, "layout": "chunk-parallel forward (no gradients)",
                 "fw_ms": round(bench(lambda: kernel(*x)), 4), "fwbw_ms": None}]  # fmt: skip
        for cps in (1, 2):  # segments of one and two chunks (at most 64 steps) through the chunk-parallel kernels
            segments.SEGMENT_CHUNKS_OVERRIDE = cps
            kernel(*g).sum().backward()
            torch.cuda.synchronize()
            fw, fwbw = bench(lambda: kernel(*g)), bench(lambda: kernel(*g).sum().backward())
            rows.append({"shape": key, "layout": f"cps={cps}, chunk-parallel kernels", "fw_ms": round(fw, 4),
                         "fwbw_ms": round(fwbw, 4)})  # fmt: skip
    finally:
        parallel.PARALLEL_FORWARD = None
        segments.SEGMENT_CHUNKS_OVERRIDE = None
    return rows


# knobs of the chunk-parallel path timed by --parallel-variants: (label, settings), each setting (module, attribute,
# value); most variants change one knob
_BWD, _PAR, _SEG = "triton_chunkwise_parallel_bwd", "triton_chunkwise_parallel", "triton_chunkwise_segments"


@contextlib.contextmanager
def knobs(settings) -> Iterator[None]:
    """Set each (module, attribute, value) of `settings` (modules under xlstm_ts.kernels.mlstm) within the block."""
    mods = [importlib.import_module(f"xlstm_ts.kernels.mlstm.{module}") for module, _, _ in settings]
    before = [getattr(mod, name) for mod, (_, name, _) in zip(mods, settings, strict=True)]
    try:
        for mod, (_, name, value) in zip(mods, settings, strict=True):
            setattr(mod, name, value)
        yield
    finally:
        for mod, (_, name, _), value in zip(mods, settings, before, strict=True):
            setattr(mod, name, value)


def _one(label: str, module: str, name: str, value) -> tuple[str, tuple[tuple[str, str, object], ...]]:
    """A variant of one knob."""
    return label, ((module, name, value),)


PARALLEL_VARIANTS = [
    _one("gradient kernel at 8 warps", _BWD, "NUM_WARPS", 8),
    _one("dq / dv state dots in TF32", _BWD, "STATE_OUT_DOTS", False),
    _one("output kernel at 8 warps", _PAR, "OUT_NUM_WARPS", 8),
    _one("boundary carry of 32 steps", _SEG, "BOUNDS_CARRY_OVERRIDE", 32),
    _one("gradient kernel with 1 pipeline stage", _BWD, "NUM_STAGES", 1),
    _one("gradient kernel with 2 pipeline stages", _BWD, "NUM_STAGES", 2),
    _one("boundary kernels at 8 warps", _SEG, "BOUNDS_WARPS", 8),
    _one("forward dots in TF32", "triton_chunkwise", "PARALLEL_GRAD_FWD_LOWP", False),
    _one("fp32 entering states without gradients", _PAR, "NO_GRAD_STATES_IN_INPUT_DTYPE", False),
    _one("output kernel in 64 value columns with bf16 dots", _PAR, "OUT_VALUE_BLOCK", 64),
    _one("output kernel in 128 value columns with TF32 dots", _PAR, "FP32_DOTS_VALUE_BLOCK", 128),
    _one("fp32 entering states with gradients", _PAR, "GRAD_STATES_IN_INPUT_DTYPE", False),
    _one("h read by each backward kernel", _BWD, "ROW_DOTS_FIRST", False),
    _one("boundary blocks of 64 x 64 columns", _SEG, "BOUNDS_BLOCKS_OVERRIDE", (64, 64)),
    _one("boundary blocks of 64 x 128 columns", _SEG, "BOUNDS_BLOCKS_OVERRIDE", (64, 128)),
    _one("boundary blocks of 32 x 64 columns", _SEG, "BOUNDS_BLOCKS_OVERRIDE", (32, 64)),
    _one("boundary blocks of 64 x 32 columns", _SEG, "BOUNDS_BLOCKS_OVERRIDE", (64, 32)),
    _one("boundary blocks of 32 x 32 columns", _SEG, "BOUNDS_BLOCKS_OVERRIDE", (32, 32)),
    _one("output kernel pipelined, bf16 states and dots (races)", _PAR, "LOWP_STATE_STAGES", None),
    _one("one state per chunk without gradients (no pairs)", _PAR, "PAIRED_STATES", False),
    _one("paired output kernel at 8 warps", _PAR, "PAIR_NUM_WARPS", 8),
    _one("paired boundary kernel in 64 value columns", _PAR, "PAIR_BOUNDS_VALUE_BLOCK", None),
    _one("gradient kernel with dv apart", _BWD, "GRAD_PARTS", (1, 2)),
    _one("gradient kernel as dq, dk with gates, dv", _BWD, "GRAD_PARTS", (3, 4, 2)),
    ("boundary backward with the row prefetch",
     ((_SEG, "BOUNDS_BWD_PREFETCH", True), (_BWD, "BOUNDS_ROWS_FIRST", False))),
    _one("boundary backward forming its factors in the walk", _BWD, "BOUNDS_ROWS_FIRST", False),
    _one("boundary forward from a pass of gate terms", _SEG, "BOUNDS_GATES_FIRST", True),
    _one("state gradients in scaled fp16 blocks", _BWD, "SCALED_DC", True),
    _one("dq launch beside the boundary kernel", _BWD, "CONCURRENT_DQ", True),
    _one("forward boundary kernel with gradients in 64 value columns", _PAR, "GRAD_BOUNDS_VALUE_BLOCK", None),
    _one("boundary forward without the gate prefetch", _SEG, "BOUNDS_GATE_PREFETCH", False),
    _one("gradient kernel at 16 warps", _BWD, "NUM_WARPS", 16),
    ("gradient kernel as dq, dk with gates (16 warps), dv (8 warps)", ((_BWD, "GRAD_PARTS", (3, 4, 2)),
                                                                      (_BWD, "NUM_WARPS", 16))),
    ("gradient kernel with dv apart, the rest at 16 warps", ((_BWD, "GRAD_PARTS", (1, 2)), (_BWD, "NUM_WARPS", 16))),
    ("gradient kernel at 8 warps with 1 pipeline stage", ((_BWD, "NUM_WARPS", 8), (_BWD, "NUM_STAGES", 1))),
    ("gradient kernel at 8 warps with 1 pipeline stage, 128 registers",
     ((_BWD, "NUM_WARPS", 8), (_BWD, "NUM_STAGES", 1), (_BWD, "GRAD_MAXNREG", 128))),
    _one("gradient kernel with a dq sweep of its own", _BWD, "DQ_SWEEP", True),
    ("gradient kernel with a dq sweep of its own, 8 warps, 1 pipeline stage",
     ((_BWD, "DQ_SWEEP", True), (_BWD, "NUM_WARPS", 8), (_BWD, "NUM_STAGES", 1))),
    ("gradient kernel with dv apart, both at 4 warps", ((_BWD, "GRAD_PARTS", (1, 2)), (_BWD, "DV_NUM_WARPS", 4))),
    ("gradient kernel as dq, dk with gates, dv, all at 4 warps", ((_BWD, "GRAD_PARTS", (3, 4, 2)),
                                                                 (_BWD, "DV_NUM_WARPS", 4))),
]


def time_parallel_variants(shape: tuple[int, int, int, int], warmup: int, reps: int,
                           only: list[str] | None = None, gpu_ms: bool = False) -> list[dict]:  # fmt: skip
    """A row of the default knobs, then one row per variant of `PARALLEL_VARIANTS` (those whose label contains one of
    `only`, if given), each alone on the chunk-parallel layout in 64-step segments (`MAX_SEGMENT`), fw without
    gradients and fw+bw; its knobs are restored after its row. With `gpu_ms`, each row also holds the summed kernel
    time of one call on the device (`gpu_time`), which ranks GPU-side changes where the host sets the wall-clock
    medians, and the fw+bw call's largest kernels (`fwbw_kernels_us`: name -> device us per call), which tell which
    kernel a knob moved. Each variant's row holds `max_err_vs_default`: the largest relative RMS difference of its h
    and q, k, v, i, f gradients from the default knobs' on the same inputs (a check on the device beside the timing;
    the fp64 tests are `pytest -m gpu`)."""
    from triton.testing import do_bench

    from xlstm_ts.kernels._testing import err_ratio
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel

    kernel, x, g = _inputs(shape)
    bench = lambda fn: do_bench(fn, warmup=warmup, rep=reps, return_mode="median")  # noqa: E731
    key, rows, reference = ", ".join(map(str, shape)), [], None
    cps = max(parallel.MAX_SEGMENT // _grad_tiles(shape[2], shape[3])[0], 1)  # chunks per 64-step segment
    for label, settings in [("default knobs", ()), *PARALLEL_VARIANTS]:
        if only and settings and not any(word in label for word in only):
            continue
        forced = (("triton_chunkwise_parallel", "PARALLEL_FORWARD", True),
                  ("triton_chunkwise_segments", "SEGMENT_CHUNKS_OVERRIDE", cps))  # fmt: skip
        with knobs((*settings, *forced)):
            outputs = _h_and_grads(kernel, g)
            fw_call, fwbw_call = lambda: kernel(*x), lambda: kernel(*g).sum().backward()
            fw, fwbw = bench(fw_call), bench(fwbw_call)
            device = (gpu_time.device_ms_per_call(fw_call), gpu_time.per_call_us(fwbw_call)) if gpu_ms else None
        row = {"shape": key, "layout": f"chunk-parallel, 64-step segments, {label}", "fw_ms": round(fw, 4),
               "fwbw_ms": round(fwbw, 4)}  # fmt: skip
        if reference is None:
            reference = outputs
        else:  # the variant's h and gradients against the default knobs' on the same inputs
            row["max_err_vs_default"] = float(f"{max(map(err_ratio, reference, outputs)):.3g}")
        if device is not None:
            kernels: dict[str, float] = {}  # names cut to 48 characters; kernels whose cut names agree are summed
            for name, us in device[1].items():
                kernels[name[:48]] = kernels.get(name[:48], 0.0) + us
            kernels = {name: round(us, 1) for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[:KERNELS_KEPT]}
            row.update(fw_gpu_ms=round(device[0], 4), fwbw_gpu_ms=round(sum(device[1].values()) / 1000, 4),
                       fwbw_kernels_us=kernels)  # fmt: skip
        rows.append(row)
    return rows


def _h_and_grads(kernel, g: list) -> list:
    """Copies of h and of the gradients of `h.sum()` for q, k, v, i, f of one call (fresh .grad), which the timed
    calls after it leave as they are; this call also warms up."""
    for t in g:
        t.grad = None
    h = kernel(*g)
    h.sum().backward()
    torch.cuda.synchronize()
    return [h.detach().clone()] + [t.grad.clone() for t in g]


def _set_tiles(k_block: int | None, v_block: int | None) -> None:
    """Column block (None: the default 128) and DHV block of the column-block launches (None: `value_block`)."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit

    ksplit.K_BLOCK = k_block or 128
    ksplit.VALUE_BLOCK_OVERRIDE = v_block


def _grad_tiles(S: int, DH: int) -> tuple[int, int]:
    """(chunk length, DHV block) of a bf16 call with gradients, column blocks included."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise
    from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit

    if DH > ksplit.K_BLOCK:
        L, BV, _ = ksplit.tiles(S, DH, DH, 64, torch.bfloat16, grad=True)
    else:
        L, _, BV, _ = triton_chunkwise._launch_config(S, DH, DH, 64, torch.float32)
    return L, BV


def plan(B: int, NH: int, S: int, DH: int, device: torch.device) -> tuple[int, int, bool]:
    """(segments, chunks per segment, chunk-parallel kernels) that a bf16 call with gradients at this shape runs,
    column blocks included."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel

    L, BV = _grad_tiles(S, DH)
    return parallel.layout(S, L, DH, -(-DH // BV) * B * NH, device, grad=True)


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """'B,NH,S,DH;B,NH,S,DH' -> shapes."""
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        dims = tuple(int(d) for d in part.split(","))
        if len(dims) != 4:
            raise SystemExit(f"--shapes takes 'B,NH,S,DH' groups separated by ';', got {part!r}")
        shapes.append(dims)
    return shapes


def write_markdown(rows: list[dict], path: Path, device: str, commit: str) -> None:
    lines = [
        "# Chunkwise mLSTM: plain against segmented layout (long sequences, few batch * heads)",
        "",
        f"Device: {device}; bf16; `triton.testing.do_bench` medians; latest run at commit {commit} (each row's "
        "commit in its column). Written by `benchmarks/mlstm_segments.py`. auto = the layout the default rule picked "
        "at that commit (`segment_plan`: plain above one program per 2 SMs; since 'chunk-parallel' appears in the "
        "label, heads wider than 64 over 1024+ steps take the chunk-parallel kernels in segments of 64 steps); "
        "cps=N forces segments of N chunks; 'chunk-parallel kernels' rows force those kernels.",
        "",
        "GPU fw / fw+bw: summed kernel time of one call on the device (`torch.profiler`, `--gpu-ms`), where timed.",
        "",
        "| B, NH, S, DH | layout | fw (ms) | fw+bw (ms) | fw+bw / plain | GPU fw / fw+bw (ms) | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    plain = {r["shape"]: r["fwbw_ms"] for r in rows if r["layout"] == "plain"}
    for r in rows:
        device = f"{r['fw_gpu_ms']:.3f} / {r['fwbw_gpu_ms']:.3f}" if "fwbw_gpu_ms" in r else "–"
        if "max_err_vs_default" in r:  # the variant's h and gradients against the default knobs'
            r = {**r, "layout": f"{r['layout']} (within {r['max_err_vs_default']:.2g} of the default's)"}
        if r["fwbw_ms"] is None:  # a forward-only row
            lines.append(f"| {r['shape']} | {r['layout']} | {r['fw_ms']:.3f} | – | – | {device} "
                         f"| {r.get('commit', '–')} |")  # fmt: skip
            continue
        ratio = r["fwbw_ms"] / plain[r["shape"]] if r["shape"] in plain else float("nan")
        lines.append(f"| {r['shape']} | {r['layout']} | {r['fw_ms']:.3f} | {r['fwbw_ms']:.3f} "
                     f"| {ratio:.2f} | {device} | {r.get('commit', '–')} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    parser.add_argument("--warmup", type=int, default=20, help="do_bench warm-up, ms")
    parser.add_argument("--reps", type=int, default=80, help="do_bench measuring time, ms")
    parser.add_argument("--sweep", default=",".join(map(str, SWEEP)),
                        help="chunks per segment to time besides plain and auto, comma-separated ('' for none)")
    parser.add_argument("--shapes", type=parse_shapes, default=SHAPES,
                        help="'B,NH,S,DH;...' shapes to time (default: the SHAPES list)")
    parser.add_argument("--k-blocks", default="", help="column blocks to time besides the default, e.g. '64,128'")
    parser.add_argument("--value-blocks", default="", help="DHV blocks of the column-block launches, e.g. '64,128'")
    parser.add_argument("--parallel-forward", action="store_true", help="also time the chunk-parallel forward")
    parser.add_argument("--parallel-variants", action="store_true",
                        help="also time the chunk-parallel path with each knob of PARALLEL_VARIANTS")  # fmt: skip
    parser.add_argument("--variants", nargs="+", help="with --parallel-variants: only the knobs whose label "
                        "contains one of these words, e.g. 'input dtype'")
    parser.add_argument("--gpu-ms", action="store_true", help="with --parallel-variants: also the summed kernel "
                        "time of one call on the device (torch.profiler)")  # fmt: skip
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("mlstm_segments.py times Triton kernels on a GPU; no CUDA device is visible here.")
    device, commit = provenance.device_name("gpu"), provenance.commit_id()
    rows = []
    ints = lambda text: [int(c) for c in text.split(",") if c.strip()]  # noqa: E731
    tiles = [(k, v) for k in ints(args.k_blocks) or [None] for v in ints(args.value_blocks) or [None]]
    for shape in args.shapes:
        sweep = ints(args.sweep)
        timed = [r for t in tiles for r in time_layouts(shape, args.warmup, args.reps, sweep, t)]
        if args.parallel_forward:
            timed += time_parallel_forward(shape, args.warmup, args.reps)
        if args.parallel_variants:
            timed += time_parallel_variants(shape, args.warmup, args.reps, args.variants, args.gpu_ms)
        for row in timed:
            row.update(device=device, commit=commit)
            rows.append(row)
            print(json.dumps(row), flush=True)
    merged = provenance.merge_rows(args.out / "mlstm_segments.json", rows, ("shape", "layout"))
    write_markdown(merged, args.out / "mlstm_segments.md", device, commit)


if __name__ == "__main__":
    main()
