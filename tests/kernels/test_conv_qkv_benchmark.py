"""benchmarks/conv_qkv.py: the unfused and fused calls it times compute the same thing, the fastest variant is the
one with the lowest summed forward + backward time, tile settings are restored, sm_90 rows merge on rerun."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlstm_ts.kernels._testing import TOLERANCES, assert_close, tolerance

pytest.importorskip("triton")


def test_timed_calls_agree(load_benchmark):
    bench = load_benchmark("conv_qkv")
    unfused, fused, unfused_bw, fused_bw = bench.block_inputs(2, 20, 128, "cpu")
    for name, ref, out in zip(("x_c", "qk", "v"), unfused(), fused()):
        assert out.dtype == torch.bfloat16
        assert_close(name, ref, out, tolerance(torch.bfloat16))
    for name, ref, out in zip(("dx", "dtaps", "dbias", "dwq", "dwk", "dwv"), unfused_bw(), fused_bw()):
        assert_close(name, ref, out, TOLERANCES["bfloat16-grad"].ratio)


def test_fastest_sums_the_cases_and_tiles_are_restored(load_benchmark):
    from xlstm_ts.kernels.conv import triton_conv_qkv

    bench = load_benchmark("conv_qkv")
    rows = [{"kind": "kernel", "direction": "forward + backward", "variant": f"fused, {v}", "ms": ms}
            for v, ms in (("defaults", 1.0), ("dw rows 256", 0.5), ("defaults", 1.0), ("dw rows 256", 1.6))]
    rows.append({"kind": "kernel", "direction": "forward", "variant": "fused, dw rows 4096", "ms": 0.1})
    rows.append({"kind": "kernel", "direction": "forward + backward", "variant": "conv op + dense matmuls", "ms": 0.1})
    assert bench.fastest(rows) == "defaults" and bench.fastest([]) == "defaults"
    before = (triton_conv_qkv.FWD_TILE, triton_conv_qkv.DW_ROWS)
    with pytest.raises(RuntimeError), bench.tiles({"FWD_TILE": (64, 8), "DW_ROWS": 7}):
        assert triton_conv_qkv.FWD_TILE == (64, 8) and triton_conv_qkv.DW_ROWS == 7
        raise RuntimeError
    assert (triton_conv_qkv.FWD_TILE, triton_conv_qkv.DW_ROWS) == before


def test_markdown_lists_registers_and_timings(load_benchmark, tmp_path):
    bench = load_benchmark("conv_qkv")
    rows = [{"kind": "sm90", "commit": "abc", "variant": "defaults", "kernel": "_group_dw_kernel_tl", "tile": "64 x 8",
             "regs": 50, "spill_bytes": 0, "smem": 49152},
            {"kind": "kernel", "device": "GPU", "commit": "abc", "direction": "forward", "shape": "1024, 64, 256",
             "variant": "fused, defaults", "ms": 0.05, "diff": 1e-3},
            {"kind": "step", "device": "GPU", "commit": "abc", "direction": "graphed bf16 step",
             "shape": "1024, 64, 128 mmmm", "variant": "fused, defaults", "ms": 5.1, "first_loss": 0.5}]  # fmt: skip
    bench.write_markdown(rows, tmp_path / "conv_qkv.md")
    text = (tmp_path / "conv_qkv.md").read_text()
    assert "| abc | defaults | `_group_dw_kernel_tl` | 64 x 8 | 50 | 0 | 49152 |" in text
    assert "| GPU, abc | forward | 1024, 64, 256 | fused, defaults | 0.0500 | 1.0e-03 |" in text
    assert "| GPU, abc | graphed bf16 step | 1024, 64, 128 mmmm | fused, defaults | 5.1000 | 0.50000 |" in text


def test_sm90_rows_cover_every_kernel_and_merge_on_rerun(tmp_path):
    """`--sm90` twice (Triton compiling, not interpreting): four kernels per tile variant, none spilling, and the
    rerun's rows replace the first run's."""
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if subprocess.run([ptxas, "--version"], capture_output=True).returncode != 0:
        pytest.skip("the triton wheel's ptxas does not run here")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "conv_qkv.py"
    for _ in range(2):
        done = subprocess.run([sys.executable, str(script), "--sm90", "--out", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "conv_qkv.json").read_text())
    variants = {r["variant"] for r in rows}
    assert len(variants) > 1 and len(rows) == 4 * len(variants)
    assert all(r["spill_bytes"] == 0 and math.isfinite(r["regs"]) for r in rows)
    assert (tmp_path / "conv_qkv.md").read_text().count("`_group_dw_kernel_tl`") == len(variants)
