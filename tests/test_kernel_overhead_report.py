"""The host / GPU time benchmark: its table, its refusal without CUDA, and (GPU) that it tells the two apart."""

import pytest
import torch


def test_markdown_rows_and_ratio(load_benchmark, tmp_path):
    bench = load_benchmark("kernel_overhead")
    where = {"device": "GPU X", "commit": "abc1234"}
    rows = [{"shape": "256, 8, 32, 64", "implementation": "ours", "host_ms": 0.7, "gpu_ms": 0.14, **where},
            {"shape": "256, 8, 32, 64", "implementation": "nxai", "host_ms": 1.9, "gpu_ms": 0.56, **where},
            {"shape": "256, 8, 32, 64", "implementation": "sdpa", "host_ms": 0.3, "gpu_ms": 0.18, **where},
            {"shape": "64, 4, 512, 64", "implementation": "ours", "host_ms": 0.8, "gpu_ms": 0.82, **where}]  # fmt: skip
    out = tmp_path / "overhead.md"
    bench.write_markdown(rows, out)
    text = out.read_text()
    assert "| ours host / GPU (ms) | nxai host / GPU (ms) | sdpa host / GPU (ms) | GPU ours / nxai |" in text
    assert "| 256, 8, 32, 64 | 0.700 / 0.140 | 1.900 / 0.560 | 0.300 / 0.180 | 0.25x | GPU X, abc1234 |" in text
    assert "| 64, 4, 512, 64 | 0.800 / 0.820 | – | – | – | GPU X, abc1234 |" in text  # NX-AI absent there


def test_markdown_keeps_one_row_per_device(load_benchmark, tmp_path):
    bench = load_benchmark("kernel_overhead")
    rows = [{"shape": "256, 8, 32, 64", "implementation": "ours", "host_ms": 0.7, "gpu_ms": 0.14, "device": "GPU X",
             "commit": "abc1234"},
            {"shape": "256, 8, 32, 64", "implementation": "ours", "host_ms": 0.5, "gpu_ms": 0.10, "device": "GPU Y",
             "commit": "def5678"}]  # fmt: skip
    out = tmp_path / "overhead.md"
    bench.write_markdown(rows, out)
    text = out.read_text()
    assert "| 256, 8, 32, 64 | 0.700 / 0.140 | – | GPU X, abc1234 |" in text
    assert "| 256, 8, 32, 64 | 0.500 / 0.100 | – | GPU Y, def5678 |" in text


def test_refuses_to_run_without_cuda(load_benchmark, monkeypatch):
    bench = load_benchmark("kernel_overhead")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--out", "unused"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_and_gpu_time_are_told_apart(load_benchmark):
    bench = load_benchmark("kernel_overhead")
    # a call that is all GPU (one long sleep kernel) and one that is all host (a Python pause, no GPU work)
    gpu_heavy = lambda: torch.cuda._sleep(2_000_000)  # noqa: E731
    host, gpu = bench.host_and_gpu_ms(gpu_heavy, queued=5, timed=10)
    assert gpu > 10 * host
    host, gpu = bench.host_and_gpu_ms(lambda: __import__("time").sleep(0.002), queued=5, timed=10)
    assert host >= 2.0 and gpu < 0.5
