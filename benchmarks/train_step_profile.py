"""Where the GPU time of our training step goes: kernel time per step by kind, and the kernels that take the most.

The step is `train_step.py`'s (forward, backward of mean(y^2), AdamW; same widths and shapes), our stack compiled
(`XLSTMStack.compile_blocks()`, rows before 2026-12 per block, since then as one graph) under bf16 autocast, the
fastest configuration there. It is profiled eagerly
(`torch.profiler`, CUDA activity, `--steps` steps after warm-up): the kernels are those the captured CUDA graph
replays, without its launch savings, so "kernel ms / step" is what a graph replay can at best reach. The graphed step
is timed in the same run for comparison.

Kinds, from the kernel names: `mlstm` / `slstm` (our Triton sequence kernels), `conv` (our Triton causal conv and
the fused conv + q/k/v op's kernels; rows recorded before the conv kernels existed show a dash), `matmul` (cuBLAS /
CUTLASS),
`fused` (Triton kernels that torch.compile generated: the element-wise and reduction work around the matmuls and
the cells), `optimizer` (the fused AdamW), `other` (everything else: copies, fills, native element-wise kernels).

    python benchmarks/train_step_profile.py --cases 1024,64,128,mmmm 1024,64,128,msmm --out benchmarks/results

`--set MODULE.ATTR=VALUE` (repeatable, as in `train_step.py`) profiles the step with a kernel switch or tile set; the
table shows the settings after the commit.

Writes train_step_profile.json (rows merged by device, shape and pattern) and train_step_profile.md. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from train_step import (
    GPU_CASES,
    RESULTS,
    add_set_option,
    build,
    kernel_settings,
    parse_case,
    prepare,
    settings_label,
    time_rounds,
)

import provenance
from gpu_time import kernel_times

KINDS = ("mlstm", "slstm", "conv", "matmul", "fused", "optimizer", "other")
TOP = 12  # kernels listed per case in the table (`--top`)
PER_KIND = 5  # kernels kept per kind in the JSON rows


def kind_of(name: str) -> str:
    """The kind of a CUDA kernel, from its name (see the module docstring)."""
    low = name.lower()
    if "mlstm" in low:
        return "mlstm"
    if "slstm" in low:
        return "slstm"
    if "causal_conv" in low or "group_dw" in low:
        return "conv"
    if any(s in low for s in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_", "ampere_")):
        return "matmul"
    if any(s in low for s in ("adam", "multi_tensor", "foreach")):
        return "optimizer"
    if low.startswith("triton_"):
        return "fused"
    return "other"


def summarize(kernels: dict[str, tuple[float, int]], steps: int, top: int = TOP) -> dict:
    """Per-step totals by kind, the `top` longest kernels and the `PER_KIND` longest of each kind, from
    name -> (total microseconds, calls) over `steps` steps."""
    ranked = [{"name": name[:90], "kind": kind_of(name), "ms": us / steps / 1e3, "calls": calls / steps}
              for name, (us, calls) in sorted(kernels.items(), key=lambda kv: -kv[1][0])]  # fmt: skip
    by_kind = {kind: sum(e["ms"] for e in ranked if e["kind"] == kind) for kind in KINDS}
    per_kind = {kind: [e for e in ranked if e["kind"] == kind][:PER_KIND] for kind in KINDS}
    return {"kernel_ms": sum(by_kind.values()), "by_kind_ms": by_kind,
            "launches_per_step": sum(e["calls"] for e in ranked), "top": ranked[:top], "top_by_kind": per_kind}


def profile_case(case: tuple[int, int, int, str], args: argparse.Namespace) -> dict:
    B, S, D, pattern = case
    x = torch.randn(B, S, D, device="cuda")
    model = build("ours-compiled", B, S, D, pattern, args, "", fresh_compile=True)
    step, _, _ = prepare(model, x, args.warmup, autocast=True)
    row = summarize(kernel_times(step, args.steps), args.steps, args.top)
    row["eager_step_ms"] = time_rounds({"eager": step}, args.reps, cuda=True)["eager"][0]
    del step
    graphed, _, _ = prepare(model, x, args.warmup, autocast=True, graph=True)  # the same compiled blocks
    row["graph_step_ms"] = time_rounds({"graph": graphed}, args.reps, cuda=True, reset_peak=False)["graph"][0]
    row.update({"device": provenance.device_name("cuda"), "torch": torch.__version__, "commit": provenance.commit_id(),
                "B": B, "S": S, "D": D, "pattern": pattern, "settings": settings_label(args.settings)})  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Training step profile: GPU kernel time by kind", "",
             "Written by `benchmarks/train_step_profile.py` (method in its docstring): our stack compiled "
             "(`XLSTMStack.compile_blocks()`: per block before 2026-12, then the whole stack), "
             "bf16 autocast, ms per step. kernels = the summed kernel time of an eager step; graph = the median "
             "step time of the same step captured as a CUDA graph.", "",
             "| device, commit[, settings] | B, S, D | pattern | graph ms | eager ms | kernels ms | launches | "
             + " | ".join(KINDS) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(KINDS)]  # fmt: skip
    for r in rows:
        where = ", ".join(x for x in (r["device"], r["commit"], r.get("settings")) if x)
        lines.append(f"| {where} | {r['B']}, {r['S']}, {r['D']} | {r['pattern']} | "
                     f"{r['graph_step_ms']:.2f} | {r['eager_step_ms']:.2f} | {r['kernel_ms']:.2f} | "
                     f"{r['launches_per_step']:.0f} | " + " | ".join(_ms(r["by_kind_ms"].get(k)) for k in KINDS)
                     + " |")  # fmt: skip
    for r in rows:
        lines += ["", f"## {r['B']}, {r['S']}, {r['D']} {r['pattern']}: the {len(r['top'])} longest kernels", "",
                  "| kernel | kind | ms / step | calls / step |", "|---|---|---|---|"]
        lines += [f"| `{t['name']}` | {t['kind']} | {t['ms']:.3f} | {t['calls']:.0f} |" for t in r["top"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=parse_case, nargs="+", default=GPU_CASES, help="B,S,D,PATTERN")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--reps", type=int, default=10, help="timed steps")
    parser.add_argument("--top", type=int, default=TOP, help="kernels listed per case")
    add_set_option(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the profile needs CUDA.")
    args.device = "cuda"
    torch.set_float32_matmul_precision("high")
    with kernel_settings(args.settings):
        rows = [profile_case(case, args) for case in args.cases]
    merged = provenance.merge_rows(args.out / "train_step_profile.json", rows, ("device", "B", "S", "D", "pattern"))
    write_markdown(merged, args.out / "train_step_profile.md")
    print((args.out / "train_step_profile.md").read_text())
    return rows


if __name__ == "__main__":
    main()
