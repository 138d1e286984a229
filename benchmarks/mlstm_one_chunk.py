"""Launch variants of the one-chunk mLSTM kernels, the calls of a patched forecaster's training step: the evidence
behind the defaults of `triton_one_chunk_fwd` (ENABLED, PER_SM, STAGES, NUM_WARPS, MAXNREG) and of
`triton_chunkwise` (FWD_MAXNREG, ONE_CHUNK_PER_SM, ONE_CHUNK_STAGES, ONE_CHUNK_MAXNREG).

    python benchmarks/mlstm_one_chunk.py --sm90 --out benchmarks/results          # any machine: registers, spills
    python benchmarks/mlstm_one_chunk.py --kernels --step --out benchmarks/results  # on a GPU

Three kinds of rows:
- `sm90`: each variant's kernel compiled for sm_90 by Triton's compiler and ptxas without a GPU
  (`kernels._testing_sm90`): registers and spilled bytes per thread, shared memory per program;
- `kernel`: the bf16 forward alone (inputs that need gradients, as in training) for each forward variant, and forward
  + backward for each backward variant (general forward), CUDA-graph timings (`triton.testing.do_bench_cudagraph`,
  median of three); q and k are head slices of one (B, S, 2 NH DH) projection output, v of a (B, S, NH DH) one, the
  gates of a (B, S, 2 NH) one, as in the mLSTM block; `diff` is the relative error against the first variant's
  output (or gradients);
- `step`: the compiled, graphed bf16 training step of `train_step.py` at (1024, 64, 128) with the defaults and with
  the fastest forward and backward variants of this run's (1024, 4, 64, 64) kernel rows, alternating (7 rounds of
  20 steps, median).
Writes mlstm_one_chunk.json (rows merged by kind, device, shape / pattern and variant) and mlstm_one_chunk.md.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from variant_report import graphed_steps, parse_args, record, timings_lines

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(1024, 4, 64, 64), (1024, 4, 64, 32), (64, 4, 64, 64)]
# knob name -> (module, attribute); modules under xlstm_ts.kernels.mlstm
KNOBS = {
    "one": ("triton_one_chunk_fwd", "ENABLED"), "min_dqk": ("triton_one_chunk_fwd", "MIN_DQK"),
    "per_sm": ("triton_one_chunk_fwd", "PER_SM"), "stages": ("triton_one_chunk_fwd", "STAGES"),
    "warps": ("triton_one_chunk_fwd", "NUM_WARPS"), "regs": ("triton_one_chunk_fwd", "MAXNREG"),
    "general_regs": ("triton_chunkwise", "FWD_MAXNREG"), "general_warps": ("triton_chunkwise", "NUM_WARPS_OVERRIDE"),
    "bwd_per_sm": ("triton_chunkwise", "ONE_CHUNK_PER_SM"), "bwd_stages": ("triton_chunkwise", "ONE_CHUNK_STAGES"),
    "bwd_regs": ("triton_chunkwise", "ONE_CHUNK_MAXNREG"), "bwd_warps": ("triton_chunkwise", "ONE_CHUNK_NUM_WARPS"),
}
# every variant names all launch knobs of its pass (the rest from these bases), so that its name keeps its meaning
# when the module defaults change; the step rows compare the defaults as they are with the fastest pair
FORWARD_BASE = {"one": True, "per_sm": None, "stages": 1, "warps": None, "regs": None, "general_regs": None,
                "general_warps": None}  # fmt: skip
# the backward variants run after the general forward (their fw+bw rows time the backward's change alone)
BACKWARD_BASE = {"one": False, "general_regs": None, "general_warps": None, "bwd_per_sm": None, "bwd_stages": 1,
                 "bwd_regs": 168, "bwd_warps": None}  # fmt: skip
FORWARD = {name: {**FORWARD_BASE, **settings} for name, settings in {
    "general": {"one": False},
    "general, 168 regs": {"one": False, "general_regs": 168},
    "general, 8 warps, 128 regs": {"one": False, "general_warps": 8, "general_regs": 128},
    "blocks": {},
    "blocks, 168 regs": {"regs": 168},
    "blocks, 128 regs": {"regs": 128},
    "blocks, 8 warps": {"warps": 8},
    "blocks, 4/SM, 2 stages": {"per_sm": 4, "stages": 2},
    "blocks, 3/SM, 2 stages, 168 regs": {"per_sm": 3, "stages": 2, "regs": 168},
    "blocks, 4/SM, 2 stages, 128 regs": {"per_sm": 4, "stages": 2, "regs": 128},
    "blocks, 4/SM, 1 stage, 128 regs": {"per_sm": 4, "stages": 1, "regs": 128},
    "blocks, 2/SM, 2 stages, 8 warps": {"per_sm": 2, "stages": 2, "warps": 8},
}.items()}
BACKWARD = {name: {**BACKWARD_BASE, **settings} for name, settings in {
    "per head, 168 regs": {},
    "per head, 128 regs": {"bwd_regs": 128},
    "3/SM, 1 stage, 168 regs": {"bwd_per_sm": 3, "bwd_stages": 1},
    "3/SM, 2 stages, 168 regs": {"bwd_per_sm": 3, "bwd_stages": 2},
    "2/SM, 2 stages, no cap": {"bwd_per_sm": 2, "bwd_stages": 2, "bwd_regs": None},
    "4/SM, 2 stages, 128 regs": {"bwd_per_sm": 4, "bwd_stages": 2, "bwd_regs": 128},
}.items()}


def knobs(settings: dict):
    """The knobs of `settings` set (the forward's MIN_DQK to 16 unless given) and restored afterwards (a context
    manager)."""
    from train_step import kernel_settings

    settings = {"min_dqk": 16, **settings}
    return kernel_settings([(_module(key), KNOBS[key][1], value) for key, value in settings.items()])


def _module(key: str):
    """The kernel module that holds knob `key`."""
    import importlib

    return importlib.import_module(f"xlstm_ts.kernels.mlstm.{KNOBS[key][0]}")


def default_variant(table: dict[str, dict], prefix: str = "") -> str:
    """The variant of `table` whose knobs starting with `prefix` all equal the module defaults."""
    for name, settings in table.items():
        if all(getattr(_module(k), KNOBS[k][1]) == v for k, v in settings.items() if k.startswith(prefix)):
            return name
    raise ValueError("no variant matches the module defaults: add one to FORWARD / BACKWARD")


def block_inputs(B: int, NH: int, S: int, DH: int, device: str, dtype=torch.bfloat16):
    """fw() and fwbw() of mlstm_chunkwise--triton on the layouts of the mLSTM block (see the module docstring)."""
    from xlstm_ts.kernels import get_kernel

    gen = torch.Generator().manual_seed(0)
    qk = torch.randn(B, S, 2 * NH * DH, generator=gen).to(device, dtype).requires_grad_()
    v = torch.randn(B, S, NH * DH, generator=gen).to(device, dtype).requires_grad_()
    gates = torch.randn(B, S, 2 * NH, generator=gen)
    gates[..., NH:] += 3.0
    gates = gates.to(device, dtype).requires_grad_()
    dh = torch.randn(B, S, NH, DH, generator=gen).to(device, dtype).transpose(1, 2)  # (B, NH, S, DH)
    heads = lambda t: t.reshape(B, S, NH, DH).transpose(1, 2)  # noqa: E731
    cell = get_kernel("mlstm_chunkwise--triton")

    def fw() -> torch.Tensor:
        q, k = qk.chunk(2, dim=-1)
        i, f = gates.chunk(2, dim=-1)
        return cell(heads(q), heads(k), heads(v), i.transpose(1, 2), f.transpose(1, 2), chunk_size=64)

    def fwbw() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(fw(), (qk, v, gates), dh)

    return fw, fwbw


def _rel(a, b) -> float:
    a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
    return max(((x.double() - y.double()).norm() / y.double().norm()).item() for x, y in zip(a, b))


def sm90_rows() -> list[dict]:
    """Registers, spills and shared memory of each variant's kernel on sm_90, compiled here (no GPU needed)."""
    from xlstm_ts.kernels._testing_sm90 import compile_sm90, recorded_launches

    rows = []
    for direction, table in (("forward", FORWARD), ("backward", BACKWARD)):
        for name, settings in table.items():
            with knobs(settings), recorded_launches() as calls:
                fw, _ = block_inputs(2, 4, 64, 64, "cpu")
                h = fw()
                if direction == "backward":
                    h.float().sum().backward()
            kernel, args, meta = calls[-1]  # the forward's launch, or the backward's
            usage = compile_sm90(kernel, args, meta)
            rows.append({"kind": "sm90", "direction": direction, "variant": name, "shape": "S=64, DH=64, bf16",
                         "kernel": usage["kernel"], "warps": usage["num_warps"], "regs": usage["regs"],
                         "spill_bytes": usage["stack"], "smem": usage["smem"]})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def kernel_rows(shapes: list[tuple[int, ...]]) -> list[dict]:
    """CUDA-graph timings of every forward variant (forward alone) and backward variant (forward + backward)."""
    from triton.testing import do_bench_cudagraph

    rows = []
    for shape in shapes:
        fw, fwbw = block_inputs(*shape, "cuda")
        for direction, table, fn in (("forward", FORWARD, fw), ("forward + backward", BACKWARD, fwbw)):
            ref = None
            for name, settings in table.items():
                with knobs(settings):
                    out = fn()
                    ref = out if ref is None else ref
                    ms = statistics.median(do_bench_cudagraph(fn, rep=200) for _ in range(3))
                rows.append({"kind": "kernel", "direction": direction, "variant": name,
                             "shape": ", ".join(map(str, shape)), "ms": ms, "diff": _rel(out, ref)})  # fmt: skip
                print(rows[-1], flush=True)
    return rows


def fastest(rows: list[dict], direction: str) -> str:
    """The fastest variant of `direction` at (1024, 4, 64, 64) in `rows` (without rows: the variant the module
    defaults equal)."""
    mine = [r for r in rows if r["direction"] == direction and r["shape"] == "1024, 4, 64, 64"]
    if mine:
        return min(mine, key=lambda r: r["ms"])["variant"]
    return default_variant(FORWARD) if direction == "forward" else default_variant(BACKWARD, prefix="bwd")


def step_rows(fw_variant: str, bw_variant: str, patterns=("mmmm", "msmm")) -> list[dict]:
    """Graphed bf16 training step at (1024, 64, 128): defaults against the given variants, alternating."""
    chosen = {**BACKWARD[bw_variant], **FORWARD[fw_variant], "min_dqk": 64}  # the forward variant's own forward
    rows = []
    for pattern in patterns:
        rows += graphed_steps(1024, 64, 128, pattern, {
            "defaults": lambda: knobs({"min_dqk": 64}),
            f"{fw_variant} / {bw_variant}": lambda: knobs(chosen),
        })  # fmt: skip
    return rows


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# One-chunk mLSTM kernels: launch variants", "",
             "Written by `benchmarks/mlstm_one_chunk.py` (setup in its docstring).", ""]  # fmt: skip
    sm = [r for r in rows if r["kind"] == "sm90"]
    if sm:
        lines += ["## Registers on sm_90 (compiled without a GPU)", "",
                  "| commit | pass | variant | kernel | warps | registers | spilled bytes | shared memory |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['commit']} | {r['direction']} | {r['variant']} | `{r['kernel']}` | {r['warps']} | {r['regs']} "
                  f"| {r['spill_bytes']} | {r['smem']} |" for r in sm]  # fmt: skip
        lines.append("")
    path.write_text("\n".join(lines + timings_lines(rows)))


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(__doc__.splitlines()[0], argv, RESULTS, "kernel timings",
                      "graphed step with the fastest variants")
    rows = sm90_rows() if args.sm90 else []
    if args.kernels:
        rows += kernel_rows(SHAPES)
    if args.step:
        rows += step_rows(fastest(rows, "forward"), fastest(rows, "forward + backward"))
    return record(rows, args.out, "mlstm_one_chunk", write_markdown, cuda=args.kernels or args.step)


if __name__ == "__main__":
    main()
