"""Repeat launches of a Triton kernel with less host time: the compiled kernel of each call signature is kept.

`kernel[grid](*args, **meta)` binds and specializes every argument in Python on each call (native per-argument
checks, a cache key built from them and from the options), then calls the compiled kernel's C launcher. For the
mLSTM kernels, with 50 to 75 arguments, that is 35-50 us of host time per launch on an H200 host, against about
10 us for the C launcher alone. `FastLauncher` runs the first call of each signature through Triton unchanged and
remembers the compiled kernel; later calls with the same signature go straight to the C launcher.

The signature is exact for what Triton specializes on: every int argument by value (so ints equal to 1 and
multiples of 16 are covered), every tensor by dtype and 16-byte alignment of its address, float arguments by type,
the meta-parameters, num_warps, the grid and the current device. Anything else (an argument of another kind,
launch hooks set by a profiler, a launch counter patching `kernel[grid]`, the interpreter) takes Triton's own path.
`ENABLED = False` turns the shortcut off everywhere.
"""

from __future__ import annotations

import torch
from triton import knobs
from triton.runtime.jit import KernelInterface

# set False to launch every call through Triton's own binding (A/B timings, debugging)
ENABLED = True

_MAX_SIGNATURES = 64  # per kernel: shapes, strides and flags seen; oldest dropped first

# launch options that are compile options only (part of the key here, not arguments of the C launcher)
_LAUNCH_OPTIONS = {"num_warps", "num_stages", "maxnreg"}


def _signature(args: tuple) -> tuple | None:
    """What Triton specializes a call on, per positional argument: an int or bool by value, a float by type, a tensor
    by (dtype, 16-byte alignment of its address); None for an argument kind not handled here. One comprehension
    (this runs on every launch): anything else is read as a tensor, and an object without a tensor's `dtype` and
    `data_ptr` (None, a NumPy scalar) ends the attempt."""
    try:
        return tuple([
            a if (kind := type(a)) is int or kind is bool else float if kind is float
            else (a.dtype, not a.data_ptr() & 15)
            for a in args
        ])  # fmt: skip
    except AttributeError:
        return None


class FastLauncher:
    """`FastLauncher(kernel)[grid](*args, num_warps=..., **meta)` launches like `kernel[grid](...)`.

    Args:
        kernel: a `@triton.jit` function whose runtime parameters all come before its constexpr parameters and are
            passed positionally; meta-parameters are passed by keyword.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        params = getattr(kernel, "params", None)
        self._constexprs = None
        if params is not None and hasattr(kernel, "device_caches"):  # a JITFunction, not the interpreter's
            names = [p.name for p in params if p.is_constexpr]
            defaults = {p.name: p.default for p in params if p.is_constexpr}
            first = next((n for n, p in enumerate(params) if p.is_constexpr), len(params))
            if all(p.is_constexpr for p in params[first:]):
                self._constexprs = (len(params) - len(names), names, defaults)
        self._compiled: dict = {}

    def __getitem__(self, grid):
        return lambda *args, **meta: self._launch(grid, args, meta)

    def _launch(self, grid: tuple, args: tuple, meta: dict):
        fast = ENABLED and self._constexprs is not None and _plain_launches()
        key = _signature(args) if fast else None
        if key is None:
            return self.kernel[grid](*args, **meta)
        device = torch.cuda.current_device()
        key = (key, tuple(meta.items()), tuple(grid), device)
        hit = self._compiled.get(key)
        if hit is None:
            compiled = self.kernel[grid](*args, **meta)
            self._remember(key, compiled, args, meta)
            return compiled
        compiled, tail = hit
        grid3 = (*grid, 1, 1)
        stream = _raw_stream(device)
        compiled.run(grid3[0], grid3[1], grid3[2], stream, compiled.function, compiled.packed_metadata, None, None,
                     None, *args, *tail)  # fmt: skip
        return compiled

    def _remember(self, key, compiled, args: tuple, meta: dict) -> None:
        """Keep the compiled kernel and the constexpr values it is launched with (the C launcher takes every
        parameter in order), if the binding Triton made agrees with this reading of the arguments."""
        n_runtime, names, defaults = self._constexprs
        if len(args) != n_runtime or not set(meta) <= set(names) | _LAUNCH_OPTIONS:
            return
        if not all(getattr(compiled, a, None) is not None for a in ("run", "function", "packed_metadata")):
            return
        tail = tuple(meta.get(name, defaults[name]) for name in names)
        if len(self._compiled) >= _MAX_SIGNATURES:
            self._compiled.pop(next(iter(self._compiled)))
        self._compiled[key] = (compiled, tail)


_LAUNCHERS: dict = {}


def fast(kernel) -> FastLauncher:
    """`kernel`'s FastLauncher, made on first use: for call sites that read their kernel from a module attribute at
    each launch (`fast(_kernel_tl)[grid](...)`), so a test that wraps the attribute still sees every launch."""
    launcher = _LAUNCHERS.get(kernel)
    if launcher is None:
        launcher = _LAUNCHERS[kernel] = FastLauncher(kernel)
    return launcher


def _plain_launches() -> bool:
    """False while something observes launches (Triton launch hooks, a patched `kernel[grid]`)."""
    runtime = knobs.runtime
    quiet = _quiet(runtime.launch_enter_hook) and _quiet(runtime.launch_exit_hook)
    return quiet and KernelInterface.__getitem__ is _TRITON_GETITEM


def _quiet(hook) -> bool:
    """No launch hook: None, or an empty hook chain (Triton >= 3.5 keeps a chain that tools add to)."""
    return hook is None or (isinstance(getattr(hook, "calls", None), list) and not hook.calls)


def _raw_stream(device: int) -> int:
    """The current CUDA stream's handle, as Triton's launch path reads it."""
    return torch._C._cuda_getCurrentRawStream(device)


_TRITON_GETITEM = KernelInterface.__getitem__
