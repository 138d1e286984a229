"""Device time of the CUDA kernels a callable runs, from `torch.profiler`: what a GPU-side change saves even where
wall-clock medians are set by the host (short calls whose launches and Python take as long as their kernels).

    kernel_times(step, steps)   -> {kernel name: (total device microseconds, launches)} over `steps` calls
    per_call_us(step)           -> {kernel name: device microseconds per call}, largest first
    device_ms_per_call(step)    -> summed kernel time of one call, ms (the mean over `calls` profiled calls)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch


def sum_device_events(events: Iterable) -> dict[str, tuple[float, int]]:
    """name -> (total device microseconds, count) over the profiler events that ran on a CUDA device; events on the
    host (device_type CPU) are left out. Reads `device_time` (torch >= 2.4), else `cuda_time`."""
    out: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        out[event.name][0] += event.device_time if hasattr(event, "device_time") else event.cuda_time
        out[event.name][1] += 1
    return {name: (us, calls) for name, (us, calls) in out.items()}


def kernel_times(step: Callable[[], object], steps: int) -> dict[str, tuple[float, int]]:
    """name -> (total device microseconds, launches) of the CUDA kernels that `steps` calls of `step` ran (waits for
    the device before and after)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return sum_device_events(prof.events())


def per_call_us(step: Callable[[], object], calls: int = 10) -> dict[str, float]:
    """name -> device microseconds per call of each kernel that `step` runs (the mean over `calls` profiled calls),
    largest first."""
    if calls < 1:
        raise ValueError(f"per_call_us needs calls >= 1, got {calls}")
    times = {name: us / calls for name, (us, _) in kernel_times(step, calls).items()}
    return dict(sorted(times.items(), key=lambda item: -item[1]))


def device_ms_per_call(step: Callable[[], object], calls: int = 10) -> float:
    """Summed device time of every kernel one call of `step` runs, in ms, averaged over `calls` profiled calls."""
    if calls < 1:
        raise ValueError(f"device_ms_per_call needs calls >= 1, got {calls}")
    return sum(per_call_us(step, calls).values()) / 1000
