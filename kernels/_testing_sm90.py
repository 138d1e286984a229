"""Shared memory and registers of our Triton kernels on an H100/H200 (sm_90), found without a GPU.

A kernel that needs more shared memory than the device has fails only when it is launched on that device (Triton
raises OutOfResources), so the CPU interpreter tests cannot see it. Here the kernels' launches are recorded from
ordinary CPU calls of the public ops (nothing is launched: the outputs are left unwritten), and each recorded launch is
compiled for sm_90 by Triton's own compiler and ptxas, which ship with the triton wheel; the compiled kernel's
shared memory is compared with the device's limit. Registers and spilled bytes come from ptxas.

Run as a script, with the interpreter off (kernels must be real JIT functions):

    python -m xlstm_ts.kernels._testing_sm90      # prints one JSON line per distinct launch

`tests/kernels/test_sm90_resources.py` runs it in a subprocess, reads its JSON lines (anything else on stdout, such as
a ptxas log asked for with TRITON_DUMP_PTXAS_LOG, is skipped) and checks every launch against `SM90_SMEM_BYTES`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

SM90_SMEM_BYTES = 232448
"""Shared memory one block may opt in to on sm_90 (227 KB): H100 and H200."""

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


@contextmanager
def recorded_launches() -> Iterator[list[tuple]]:
    """Within the block every Triton launch (`kernel[grid](*args, **meta)`, also through FastLauncher) is recorded
    as (kernel, args, meta) and not run."""
    from triton.runtime.jit import KernelInterface

    from . import _fast_launch  # noqa: F401  it keeps Triton's launch path at import: import it before patching

    calls: list[tuple] = []
    original = KernelInterface.__getitem__

    def record(kernel, grid):
        return lambda *args, **meta: calls.append((kernel, args, meta))

    KernelInterface.__getitem__ = record  # FastLauncher sees a patched launch path and takes it
    try:
        yield calls
    finally:
        KernelInterface.__getitem__ = original


def launch_signature(kernel, args: tuple, meta: dict) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of one recorded launch, specialized as a launch on the device is: integer
    arguments equal to 1 become constants, and integers divisible by 16 and tensors at 16-byte aligned addresses carry
    the divisibility hint (without these the compiled kernel computes every address in full: the one-chunk mLSTM
    backward then spilled 1664 bytes per thread against 320 with them)."""
    signature, constexprs, attrs = {}, {}, {}
    aligned = [["tt.divisibility", 16]]
    for idx, param in enumerate(kernel.params):
        if idx < len(args):
            a = args[idx]
            if isinstance(a, torch.Tensor):
                signature[param.name] = "*" + _TYPES[a.dtype]
                if a.data_ptr() % 16 == 0:
                    attrs[(idx,)] = aligned
            elif isinstance(a, bool):
                signature[param.name] = "i1"
            elif isinstance(a, int) and a == 1 and idx not in kernel.do_not_specialize:
                signature[param.name] = "constexpr"
                constexprs[(idx,)] = 1
            elif isinstance(a, int):
                signature[param.name] = "i64" if abs(a) >= 2**31 else "i32"
                if a % 16 == 0 and idx not in kernel.do_not_specialize:
                    attrs[(idx,)] = aligned
            else:
                signature[param.name] = "fp32"
        else:
            signature[param.name] = "constexpr"
            constexprs[(idx,)] = meta.get(param.name, param.default)
    return signature, constexprs, attrs


def compile_sm90(kernel, args: tuple, meta: dict) -> dict:
    """Compile one recorded launch for sm_90; returns its kernel name, num_warps, shared memory, registers, spills."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs = launch_signature(kernel, args, meta)
    options = {key: meta[key] for key in ("num_warps", "num_stages", "maxnreg") if key in meta}
    source = ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    usage = _ptxas_usage(compiled.asm["cubin"])
    return {"kernel": kernel.__name__, "num_warps": compiled.metadata.num_warps, "smem": compiled.metadata.shared,
            **usage}  # fmt: skip


def _ptxas_usage(cubin: bytes) -> dict:
    """Registers and stack (spill) bytes per thread of a cubin, from cuobjdump next to Triton's ptxas."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        except OSError:  # no runnable cuobjdump: the shared memory check does not need it
            out = ""
    found = {key: re.search(rf"{key}:(\d+)", out) for key in ("REG", "STACK")}
    return {"regs": int(found["REG"].group(1)) if found["REG"] else None,
            "stack": int(found["STACK"].group(1)) if found["STACK"] else None}  # fmt: skip


def _mlstm_case(
    dtype: torch.dtype, S: int, DH: int, states: bool, segments: int | None = None, grad: bool = True,
    parallel: bool = False, paired: bool = False,
) -> Callable:
    from . import get_kernel
    from ._testing import make_mlstm_inputs, make_mlstm_states
    from .mlstm import triton_chunkwise_parallel, triton_chunkwise_segments

    def run() -> None:
        triton_chunkwise_segments.SEGMENT_CHUNKS_OVERRIDE = segments
        triton_chunkwise_parallel.PARALLEL_FORWARD = parallel
        paired_before, triton_chunkwise_parallel.PAIRED_STATES = triton_chunkwise_parallel.PAIRED_STATES, paired
        try:
            leaves = [x.to(dtype).requires_grad_(grad) for x in make_mlstm_inputs(2, 3, S, DH, DH)]
            init = [x.float() for x in make_mlstm_states(2, 3, DH, DH)] if states else [None] * 3
            h, _ = get_kernel("mlstm_chunkwise--triton")(*leaves, *init, return_last_states=True)
            if grad:
                h.float().sum().backward()
        finally:
            triton_chunkwise_segments.SEGMENT_CHUNKS_OVERRIDE = None
            triton_chunkwise_parallel.PARALLEL_FORWARD = None
            triton_chunkwise_parallel.PAIRED_STATES = paired_before

    return run


def _slstm_case(dtype: torch.dtype, S: int, DH: int, kernel: str = "slstm--triton") -> Callable:
    from . import get_kernel

    def run() -> None:
        NH = 2
        wx = torch.randn(4, S, 4, NH, DH).to(dtype).requires_grad_()
        r = (0.1 * torch.randn(NH, 4, DH, DH)).requires_grad_()
        b = torch.zeros(NH, 4, DH, requires_grad=True)
        get_kernel(kernel)(wx, r, b).float().sum().backward()

    return run


def _conv_case(dtype: torch.dtype, T: int, silu: bool) -> Callable:
    from . import get_kernel

    def run() -> None:
        x = torch.randn(4, T, 2 * 256).to(dtype)[..., :256].requires_grad_()  # a projection's slice, as in a block
        weight, bias = torch.randn(256, 1, 4, requires_grad=True), torch.randn(256, requires_grad=True)
        get_kernel("causal_conv--triton")(x, weight, bias, "silu" if silu else None).float().sum().backward()

    return run


def _conv_qkv_case(dtype: torch.dtype, T: int) -> Callable:
    from . import get_kernel

    def run() -> None:
        x = torch.randn(4, T, 2 * 256).to(dtype)[..., :256].requires_grad_()  # a projection's slice, as in a block
        weight, bias = torch.randn(256, 1, 4, requires_grad=True), torch.randn(256, requires_grad=True)
        maps = [torch.randn(4, 64, 64, requires_grad=True) for _ in range(3)]  # groups of 64 of 256 channels
        outs = get_kernel("conv_qkv--triton")(x, weight, bias, *maps, "silu")
        sum(o.float().sum() for o in outs).backward()

    return run


CASES: dict[str, Callable[[], Callable]] = {
    f"mlstm {dtype_name} S={S} DH={DH}{' states' if states else ''}{' segments' if seg else ''}": (
        lambda dtype=dtype, S=S, DH=DH, states=states, seg=seg: _mlstm_case(dtype, S, DH, states, seg)
    )
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    for S, DH, states, seg in ((63, 64, True, None), (63, 64, False, None), (100, 64, True, None),
                               (100, 128, True, None), (100, 256, True, None), (100, 64, True, 1),
                               (100, 256, True, 1))  # fmt: skip
} | {
    # a forward without gradients (bf16 tiles: chunks of 64 for 128-wide heads), plain and segmented
    f"mlstm bf16 S=200 DH=128 no-grad{' segments' if seg else ''}": (
        lambda seg=seg: _mlstm_case(torch.bfloat16, 200, 128, False, seg, grad=False)
    )
    for seg in (None, 1)
} | {
    # the chunk-parallel forward (no gradients): the output kernel's inner DQK loop over blocks of 64
    f"mlstm {dtype_name} S=200 DH={DH} no-grad parallel{' paired' if paired else ''}": (
        lambda dtype=dtype, DH=DH, paired=paired: _mlstm_case(dtype, 200, DH, True, grad=False, parallel=True,
                                                              paired=paired)  # fmt: skip
    )
    for dtype_name, dtype, DH, paired in (("bf16", torch.bfloat16, 128, False), ("fp32", torch.float32, 512, False),
                                          ("bf16", torch.bfloat16, 128, True))
} | {
    # with gradients: segments of one chunk whose outputs (and the fp32 h, z, m) come from the output kernel
    f"mlstm bf16 S=200 DH={DH} segments of {seg} parallel": (
        lambda DH=DH, seg=seg: _mlstm_case(torch.bfloat16, 200, DH, True, seg, parallel=True)
    )
    for DH, seg in ((128, 1), (256, 1), (128, 2))
} | {
    f"slstm {dtype_name} S=9 DH={DH}": (lambda dtype=dtype, DH=DH: _slstm_case(dtype, 9, DH))
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    for DH in (64, 128)
} | {
    # the fp32 recurrent matrices re-read from L2 one gate at a time (DH 128 takes fp16 matrices on chip by default)
    "slstm bf16 S=9 DH=128 fp32r": lambda: _slstm_case(torch.bfloat16, 9, 128, "slstm--triton_fp32r")
} | {
    f"conv {dtype_name} T={T}{' silu' if silu else ''}": (
        lambda dtype=dtype, T=T, silu=silu: _conv_case(dtype, T, silu)
    )
    for dtype_name, dtype, T, silu in (("bf16", torch.bfloat16, 64, True), ("fp32", torch.float32, 64, False),
                                       ("bf16", torch.bfloat16, 100, True))  # short and long backward tiles
} | {
    f"conv_qkv {dtype_name} T={T}": (lambda dtype=dtype, T=T: _conv_qkv_case(dtype, T))
    for dtype_name, dtype, T in (("bf16", torch.bfloat16, 64), ("fp16", torch.float16, 100))  # the block's dtypes
}
"""The calls whose launches are compiled: one chunk (with and without initial states), several chunks, heads of 64,
128 and 256 (column blocks), segments, forwards without gradients, the sLSTM (fp16 recurrent matrices for bf16
heads of 128, and their fp32 re-read path), the causal conv and the fused conv + q/k/v op; fp32 and bf16 (different
dots and tiles)."""


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run with TRITON_INTERPRET unset: the interpreter's kernels cannot be compiled for a GPU.")
    seen = set()
    for case, make in CASES.items():
        with recorded_launches() as calls:
            make()()
        for kernel, args, meta in calls:
            key = (kernel.__name__, tuple(sorted(meta.items())), tuple(_TYPES.get(getattr(a, "dtype", None), type(a))
                                                                        for a in args))  # fmt: skip
            if key in seen:
                continue
            seen.add(key)
            print(json.dumps({"case": case, **compile_sm90(kernel, args, meta)}), flush=True)


if __name__ == "__main__":
    main()
