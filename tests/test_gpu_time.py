"""benchmarks/gpu_time.py: device time per kernel from profiler events, host events left out."""

from types import SimpleNamespace

import pytest
import torch


def test_device_events_are_summed_per_kernel_and_host_events_left_out(load_benchmark):
    gpu_time = load_benchmark("gpu_time")
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [SimpleNamespace(name="grad", device_type=cuda, device_time=400.0),
              SimpleNamespace(name="grad", device_type=cuda, device_time=500.0),
              SimpleNamespace(name="bounds", device_type=cuda, device_time=150.0),
              SimpleNamespace(name="aten::add_", device_type=cpu, device_time=0.0),
              SimpleNamespace(name="old", device_type=cuda, cuda_time=7.0)]  # fmt: skip  # torch < 2.4 naming
    assert gpu_time.sum_device_events(events) == {"grad": (900.0, 2), "bounds": (150.0, 1), "old": (7.0, 1)}


def test_device_ms_per_call_averages_over_the_profiled_calls(load_benchmark, monkeypatch):
    gpu_time = load_benchmark("gpu_time")
    calls = []

    def fake_kernel_times(step, steps):
        for _ in range(steps):
            step()
        return {"a": (3000.0 * steps, steps), "b": (1000.0 * steps, steps)}

    monkeypatch.setattr(gpu_time, "kernel_times", fake_kernel_times)
    assert gpu_time.device_ms_per_call(lambda: calls.append(1), calls=4) == pytest.approx(4.0)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="calls >= 1"):
        gpu_time.device_ms_per_call(lambda: None, calls=0)


def test_per_call_us_divides_by_the_calls_and_puts_the_largest_first(load_benchmark, monkeypatch):
    gpu_time = load_benchmark("gpu_time")
    monkeypatch.setattr(gpu_time, "kernel_times", lambda step, steps: {"small": (20.0 * steps, steps),
                                                                       "large": (500.0 * steps, 2 * steps)})
    shares = gpu_time.per_call_us(lambda: None, calls=5)
    assert list(shares) == ["large", "small"] and shares == {"large": 500.0, "small": 20.0}
    with pytest.raises(ValueError, match="calls >= 1"):
        gpu_time.per_call_us(lambda: None, calls=0)
