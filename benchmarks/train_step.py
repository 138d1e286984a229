"""One training step of our xLSTM block stack next to NX-AI's `xLSTMBlockStack` (xlstm 2.0.6), same run, same device.

A step is forward, backward of mean(y^2) and an AdamW step, on an input x (B, S, D) ~ N(0, 1), fp32 parameters.
Both stacks run under the same `torch.set_float32_matmul_precision` (`--matmul-precision`, default "high": fp32
matmuls and our kernels' fp32 dots may use TF32 tensor cores; "highest" keeps exact fp32 dots everywhere).
Both stacks get the same widths: embedding D, 4 heads, causal conv 4, q/k/v blocks of 4, mLSTM up-projection 2,
sLSTM feed-forward 1.3 (both rounded up to a multiple of 64, as NX-AI does), the block pattern given ('m' mLSTM
block, 's' sLSTM block), dropout 0, a final LayerNorm.
Timed: median of `--reps` steps after `--warmup` steps (CUDA synchronised on the GPU); tokens/s = B * S / step;
peak memory = the largest `torch.cuda.max_memory_allocated` of a step (GPU only). On the CPU the variants of a shape
are timed in interleaved rounds (each round one step of every variant), so that drift of a shared machine cancels
in the ratios; on a GPU one variant after the other, so that each variant's peak memory is its own.

Variants:
- `ours`: `XLSTMStack` with kernel "auto" (Triton on CUDA, the torch references on the CPU), fp32.
- `ours-bf16` (GPU): the same under `torch.autocast(bfloat16)`; the kernels keep gates, states and sums in fp32.
- `ours-compiled` (with `--compile`): the same stack after `XLSTMStack.compile_blocks()` (the whole stack compiled);
  the first step, which compiles, is timed apart as `first_step_s`.
- `ours-compiled-graph`, `ours-compiled-bf16-graph` (GPU, with `--graph`): the compiled stack's whole step (fp32, or
  under bf16 autocast) captured once as a CUDA graph and replayed (`xlstm_ts.graphed_step.GraphedTrainStep`, AdamW
  with capturable=True); `first_step_s` is then the capture (compiling, warm-up steps); the peak memory counts the
  capture too.
- `nxai`: `xLSTMBlockStack`, mLSTM in its torch parallel form, sLSTM backend `cuda` on the GPU (an nvcc build on first
  use) and `vanilla` on the CPU (`--slstm-backend` overrides).
- `nxai-bf16` (GPU): the same under `torch.autocast(bfloat16)`, NX-AI's stack with the autocast our bf16 variants get;
  the ratios stay against `nxai` (fp32 parameters and activations, as NX-AI's models train by default), and the
  table adds ours against the faster of the two.
Rows are kept per device, shape, pattern and fp32 matmul precision: a run at `--matmul-precision highest` (torch's
default) and one at `high` make two table lines.

Usage:
    python benchmarks/train_step.py --device cuda --compile --graph  # (1024, 64, 128) x mmmm/msmm/ssss, (256, 336, 128)
    python benchmarks/train_step.py --device cpu --compile           # CPU: (64, 64, 64) and (32, 336, 64), msmm
    python benchmarks/train_step.py --compile --graph --variants ours-compiled-bf16-graph nxai   # the fastest and NX-AI
`--set conv.triton_conv_qkv.ENABLED=True` (repeatable) sets a kernel module's attribute (a module under
`xlstm_ts.kernels`, a Python literal) before anything is built, to time a kernel switch or tile before it is a
default; the table shows the settings after the device.
Needs `pip install xlstm==2.0.6 mlstm-kernels==2.0.6` for the NX-AI rows (without them only ours is timed).
Appends rows to <out>/train_step.json (per device) and rewrites <out>/train_step.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from xlstm_ts.config import ModelConfig
from xlstm_ts.graphed_step import GraphedTrainStep
from xlstm_ts.layers import round_up
from xlstm_ts.stack import XLSTMStack

from provenance import device_name, merge_rows

RESULTS = Path(__file__).resolve().parent / "results"
GPU_CASES = [(1024, 64, 128, "mmmm"), (1024, 64, 128, "msmm"), (1024, 64, 128, "ssss"), (256, 336, 128, "msmm")]
CPU_CASES = [(64, 64, 64, "msmm"), (32, 336, 64, "msmm")]  # (B, S, D, pattern)
HEADS, CONV, QKV_BLOCK, MLSTM_PROJ, SLSTM_FFN = 4, 4, 4, 2.0, 1.3


def ours(D: int, S: int, pattern: str, device: str) -> nn.Module:
    # NX-AI rounds the up-projections to multiples of 64; the same inner widths here
    mlstm_proj, slstm_ffn = round_up(MLSTM_PROJ * D, 64) / D, round_up(SLSTM_FFN * D, 64) / D
    cfg = ModelConfig(embed_dim=D, num_heads=HEADS, pattern=pattern, mlstm_proj_factor=mlstm_proj,
                      slstm_ffn_factor=slstm_ffn, conv_kernel=CONV, qkv_blocksize=QKV_BLOCK, dropout=0.0)  # fmt: skip
    return XLSTMStack(cfg).to(device)


def nxai(D: int, S: int, pattern: str, device: str, slstm_backend: str) -> nn.Module:
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMBlockStack,  # fmt: skip
        xLSTMBlockStackConfig,
    )

    mlstm = mLSTMBlockConfig(mlstm=mLSTMLayerConfig(conv1d_kernel_size=CONV, qkv_proj_blocksize=QKV_BLOCK,
                                                    num_heads=HEADS, proj_factor=MLSTM_PROJ))  # fmt: skip
    slstm = sLSTMBlockConfig(slstm=sLSTMLayerConfig(backend=slstm_backend, num_heads=HEADS, conv1d_kernel_size=CONV,
                                                    bias_init="powerlaw_blockdependent"),
                             feedforward=FeedForwardConfig(proj_factor=SLSTM_FFN, act_fn="gelu"))  # fmt: skip
    cfg = xLSTMBlockStackConfig(mlstm_block=mlstm if "m" in pattern else None,
                                slstm_block=slstm if "s" in pattern else None, context_length=S,
                                num_blocks=len(pattern), embedding_dim=D,
                                slstm_at=[i for i, kind in enumerate(pattern) if kind == "s"])  # fmt: skip
    return xLSTMBlockStack(cfg).to(device)


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float().pow(2).mean()


def prepare(model: nn.Module, x: torch.Tensor, warmup: int, autocast: bool, graph: bool = False):
    """A zero-argument training step of `model` on x, after its first (timed) step and `warmup` more.

    Returns (step, first loss, seconds of the first step; for a graph, of the capture)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, capturable=graph)
    start = time.perf_counter()
    if graph:
        graphed = GraphedTrainStep(model, opt, _loss, (x,), torch.bfloat16 if autocast else None, warmup=warmup)
        first = float(graphed(x))
        return (lambda: graphed(x)), first, time.perf_counter() - start
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = _loss(model, x)
        loss.backward()
        opt.step()
        return loss.detach()

    first = float(step())
    first_step_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    return step, first, first_step_s


def time_rounds(steps: dict[str, Callable], reps: int, cuda: bool,
                reset_peak: bool = True) -> dict[str, tuple[float, float | None]]:  # fmt: skip
    """Median ms and peak GB (CUDA; None on the CPU) per named step over `reps` rounds; each round runs every step
    once, in turn, so a machine that speeds up or slows down during the run affects them alike. The peak counts
    from here, or with reset_peak=False from the caller's last reset."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    if cuda:
        torch.cuda.synchronize()
        if reset_peak:
            torch.cuda.reset_peak_memory_stats()
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    return {name: (statistics.median(t), peak) for name, t in times.items()}


def build(variant: str, B: int, S: int, D: int, pattern: str, args: argparse.Namespace,
          backend: str, fresh_compile: bool) -> nn.Module:  # fmt: skip
    torch.manual_seed(0)
    if variant.startswith("nxai"):
        return nxai(D, S, pattern, args.device, backend)
    model = ours(D, S, pattern, args.device)
    if variant.startswith("ours-compiled"):
        if fresh_compile:
            # the stacks built before would otherwise use up dynamo's recompile limit, and later variants would
            # silently run uncompiled
            torch._dynamo.reset()
        model.compile_blocks()
    return model


def run(args: argparse.Namespace) -> list[dict]:
    cases = args.cases or (GPU_CASES if args.device == "cuda" else CPU_CASES)
    have_nxai = importlib.util.find_spec("xlstm") is not None
    if not have_nxai:
        print("xlstm is not installed: timing ours only (pip install xlstm==2.0.6 mlstm-kernels==2.0.6).")
    backend = args.slstm_backend or ("cuda" if args.device == "cuda" else "vanilla")
    variants = ["ours", "ours-bf16"] + (["ours-compiled"] if args.compile else [])
    variants += ["ours-compiled-graph", "ours-compiled-bf16-graph"] if args.graph else []
    variants += list(NXAI_VARIANTS) if have_nxai else []
    variants = [v for v in variants if args.device == "cuda" or v not in GPU_ONLY]
    if args.variants:  # a subset, in the order given (the table shows the others of these cases as not run)
        variants = [v for v in args.variants if not v.startswith("nxai") or have_nxai]
    # interleaved rounds on the CPU (a shared machine drifts); one variant after another on a GPU, where each
    # variant's peak memory must not include the others'
    interleave = args.device == "cpu"
    torch.set_float32_matmul_precision(args.matmul_precision)
    first_compiled = next((v for v in variants if v.startswith("ours-compiled")), None)
    rows = []
    for B, S, D, pattern in cases:
        prepared = {}
        for variant in variants:
            start = time.perf_counter()
            fresh = not interleave or variant == first_compiled  # interleaved models must stay compiled
            model = build(variant, B, S, D, pattern, args, backend, fresh_compile=fresh)
            build_s = time.perf_counter() - start
            x = torch.randn(B, S, D, device=args.device)
            graph = variant.endswith("-graph")
            if graph:  # a graph's peak memory counts its capture
                torch.cuda.reset_peak_memory_stats()
            try:
                step, first, first_s = prepare(model, x, args.warmup, "bf16" in variant, graph)
            except Exception as err:  # a compiler (or NX-AI autocast) failure costs its row only; the others still run
                if not variant.startswith(("ours-compiled", "nxai-bf16")):
                    raise
                print(f"{variant} failed at {B}, {S}, {D}, {pattern}: {type(err).__name__}: {err}", flush=True)
                continue
            params = sum(p.numel() for p in model.parameters())
            prepared[variant] = (step, {"first_loss": first, "first_step_s": first_s, "params": params,
                                        "build_s": build_s})  # fmt: skip
            if not interleave:
                rows.append(_row(args, backend, (B, S, D, pattern), variant, prepared.pop(variant), args.reps))
                del model, x, step
                torch.cuda.empty_cache()
        if interleave:
            timed = time_rounds({v: p[0] for v, p in prepared.items()}, args.reps, cuda=False)
            for variant, (step, info) in prepared.items():
                rows.append(_row(args, backend, (B, S, D, pattern), variant, (step, info), args.reps, timed[variant]))
    return rows


def _row(args: argparse.Namespace, backend: str, case: tuple, variant: str, prepared: tuple, reps: int,
         timed: tuple[float, float | None] | None = None) -> dict:  # fmt: skip
    """The result row of one variant; times it alone unless `timed` (median ms, peak GB) is given."""
    B, S, D, pattern = case
    step, info = prepared
    cuda = args.device == "cuda"
    ms, peak = timed or time_rounds({variant: step}, reps, cuda, reset_peak=not variant.endswith("-graph"))[variant]
    precision = args.matmul_precision if args.device == "cuda" else None  # TF32 exists on GPUs only
    row = {"device": device_name(args.device), "torch": torch.__version__, "B": B, "S": S, "D": D,
           "pattern": pattern, "variant": variant, "matmul_precision": precision,
           "slstm_backend": backend if variant.startswith("nxai") else "", "params": info["params"],
           "build_s": info["build_s"],
           "step_ms": ms, "tokens_per_s": B * S / ms * 1e3, "peak_gb": peak, "first_loss": info["first_loss"],
           "first_step_s": info["first_step_s"],
           "settings": settings_label(args.settings)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


NXAI_VARIANTS = ("nxai", "nxai-bf16")
GPU_ONLY = {"ours-bf16", "ours-compiled-graph", "ours-compiled-bf16-graph", "nxai-bf16"}  # autocast, CUDA graphs
KEY = ("device", "B", "S", "D", "pattern", "matmul_precision")  # the rows of one table line
VARIANTS = [("ours", "ours fp32"), ("ours-bf16", "ours bf16"), ("ours-compiled", "compiled"),
            ("ours-compiled-graph", "compiled + graph"), ("ours-compiled-bf16-graph", "compiled + graph, bf16")]


def write_markdown(rows: list[dict], path: Path) -> None:
    """One line per (device, shape, pattern): NX-AI's step, then each of our variants as ms (ours / NX-AI)."""
    lines = ["# Training step: our xLSTM stack next to NX-AI's xLSTMBlockStack", "",
             "Written by `benchmarks/train_step.py` (setup in its docstring). Step = forward + backward of mean(y^2) "
             "+ AdamW, fp32 parameters; median step time in ms, and in brackets ours / NX-AI (below 1: ours is "
             "faster); tokens/s in millions; peak GPU memory in GB. After the device: the fp32 matmul precision "
             "(torch.set_float32_matmul_precision, the same for both stacks; 'high' lets fp32 matmuls use TF32), "
             "and any kernel settings of the run (`--set`).", "",
             "Variants: eager fp32; eager under bf16 autocast; compiled = `XLSTMStack.compile_blocks()` (in "
             "brackets after the ratio: seconds of the first, compiling step; much shorter when torch's on-disk "
             "compile cache already holds the graphs: 93 s cold, 6 s warm on the CPU at 64, 64, 64); + graph = the "
             "compiled step captured as one CUDA graph and replayed (`xlstm_ts.graphed_step.GraphedTrainStep`); "
             "bf16 = under bf16 autocast (gates, states and kernel sums stay fp32). Best = the fastest of ours. "
             "NX-AI bf16 = NX-AI's stack under the same bf16 autocast; best / fastest NX-AI = our best against the "
             "faster of NX-AI's fp32 and bf16 steps. A dash: not timed in that line's run (`--variants` picks a "
             "subset).", "",
             "| device | B, S, D | pattern | NX-AI ms (M tok/s) | NX-AI sLSTM | NX-AI bf16 ms | "
             + " | ".join(label for _, label in VARIANTS)
             + " | best / fastest NX-AI | best M tok/s | peak GB ours fp32 / best / NX-AI | params ours / NX-AI |",
             "|---|---|---|---|---|---|" + "---|" * len(VARIANTS) + "---|---|---|---|"]  # fmt: skip
    lines_of: dict[tuple, dict[str, dict]] = {}  # table line (KEY values) -> variant -> row, in first-seen order
    for r in rows:
        lines_of.setdefault(tuple(r[k] for k in KEY), {})[r["variant"]] = r
    for key, cell in lines_of.items():
        n, o = cell.get("nxai"), cell.get("ours")
        ours = [cell[v] for v, _ in VARIANTS if v in cell]
        best = min(ours, key=lambda r: r["step_ms"]) if ours else None

        def show(variant: str, cell: dict = cell, n: dict | None = n, best: dict | None = best) -> str:
            r = cell.get(variant)
            if r is None:
                return "–"
            ratio = f"{r['step_ms'] / n['step_ms']:.3f}x" if n else "–"
            first = f", {r['first_step_s']:.0f} s" if variant.startswith("ours-compiled") else ""
            return f"**{r['step_ms']:.2f}** ({ratio}{first})" if r is best else f"{r['step_ms']:.2f} ({ratio}{first})"

        peak = lambda r: "–" if r is None or r["peak_gb"] is None else f"{r['peak_gb']:.2f}"  # noqa: E731
        prec = "; ".join(x for x in ((o or n or best or {}).get(k) for k in ("matmul_precision", "settings")) if x)
        nx = "–" if n is None else f"{n['step_ms']:.2f} ({n['tokens_per_s'] / 1e6:.3g})"
        nb = cell.get("nxai-bf16")
        nx_bf16 = "–" if nb is None else f"{nb['step_ms']:.2f}"
        fastest = min((cell[v] for v in NXAI_VARIANTS if v in cell), key=lambda r: r["step_ms"], default=None)
        vs_fastest = "–" if best is None or fastest is None else f"{best['step_ms'] / fastest['step_ms']:.3f}x"
        backend = n["slstm_backend"] if n and "s" in key[4] else "–"
        best_tps = "–" if best is None else f"{best['tokens_per_s'] / 1e6:.3g}"
        lines.append(f"| {key[0]}{f' ({prec})' if prec else ''} | {key[1]}, {key[2]}, {key[3]} | {key[4]} | {nx} | "
                     f"{backend} | {nx_bf16} | " + " | ".join(show(v) for v, _ in VARIANTS) + " | "
                     f"{vs_fastest} | {best_tps} | "
                     f"{peak(o)} / {peak(best)} / {peak(n)} | {(o or best)['params'] if o or best else '–'} / "
                     f"{n['params'] if n else '–'} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def record(rows: list[dict], out: Path) -> Path:
    """Merge rows into out/train_step.json and rewrite train_step.md. A rerun of a device, shape, pattern and matmul
    precision replaces every old row of it, so the ratios in a table line always come from one run."""
    merged = merge_rows(out / "train_step.json", rows, KEY)
    write_markdown(merged, out / "train_step.md")
    return out / "train_step.md"


def parse_setting(text: str) -> tuple[object, str, object]:
    """'module.ATTR=value' -> (the module under xlstm_ts.kernels, ATTR, the value as a Python literal)."""
    import ast

    where, _, value = text.partition("=")
    module_name, _, attr = where.rpartition(".")
    hint = "expected MODULE.ATTR=VALUE with MODULE under xlstm_ts.kernels, e.g. conv.triton_conv_qkv.ENABLED=True"
    try:
        module = importlib.import_module(f"xlstm_ts.kernels.{module_name}")
        parsed = ast.literal_eval(value)
    except (ImportError, ValueError, SyntaxError) as err:
        raise argparse.ArgumentTypeError(f"{hint}; got {text!r} ({err}).") from None
    if not hasattr(module, attr):
        raise argparse.ArgumentTypeError(f"{hint}; xlstm_ts.kernels.{module_name} has no attribute {attr!r}.")
    return module, attr, parsed


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """`--set MODULE.ATTR=VALUE` (repeatable) into `args.settings`, parsed by `parse_setting`."""
    parser.add_argument("--set", type=parse_setting, action="append", default=[], dest="settings",
                        metavar="MODULE.ATTR=VALUE", help="set a kernel module's attribute first (repeatable)")


@contextlib.contextmanager
def kernel_settings(settings: list[tuple[object, str, object]]):
    """The (module, attribute, value) settings of `--set` applied, and the old values restored afterwards."""
    old = [(module, attr, getattr(module, attr)) for module, attr, _ in settings]
    try:
        for module, attr, value in settings:
            setattr(module, attr, value)
        yield
    finally:
        for module, attr, value in old:
            setattr(module, attr, value)


def settings_label(settings: list[tuple[object, str, object]]) -> str:
    """'conv.triton_conv_qkv.ENABLED=True; ...': the `--set` settings as the tables show them ('' without any)."""
    return "; ".join(f"{m.__name__.removeprefix('xlstm_ts.kernels.')}.{a}={v!r}" for m, a, v in settings)


def parse_case(text: str) -> tuple[int, int, int, str]:
    try:
        B, S, D, pattern = text.split(",")
        return int(B), int(S), int(D), pattern
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is B,S,D,PATTERN such as 64,64,64,msmm; got {text!r}") from None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cases", type=parse_case, nargs="+", help="B,S,D,PATTERN (default: the device's shapes)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--matmul-precision", choices=("highest", "high"), default="high",
                        help="torch.set_float32_matmul_precision for both stacks")
    parser.add_argument("--compile", action="store_true", help="also time our stack compiled")
    parser.add_argument("--graph", action="store_true", help="also time the compiled step captured as a CUDA graph "
                        "(fp32 and bf16 autocast; GPU only)")
    parser.add_argument("--slstm-backend", choices=("cuda", "vanilla"), help="NX-AI sLSTM backend")
    parser.add_argument("--variants", nargs="+", choices=[v for v, _ in VARIANTS] + list(NXAI_VARIANTS),
                        help="time only these (default: every variant the other flags ask for)")
    add_set_option(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.device == "cpu" and GPU_ONLY & set(args.variants or ()):
        parser.error(f"{sorted(GPU_ONLY & set(args.variants))} run on CUDA only; drop them or pass --device cuda.")
    with kernel_settings(args.settings):
        rows = run(args)
    if not args.no_record:
        print(record(rows, args.out).read_text())
    return rows


if __name__ == "__main__":
    main()
