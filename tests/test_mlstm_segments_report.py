"""The segmented-layout benchmark's table: one row per shape and layout, fw+bw relative to the plain layout."""

import pytest
import torch


def test_markdown_ratios_against_plain(load_benchmark, tmp_path):
    bench = load_benchmark("mlstm_segments")
    rows = [{"shape": "1, 4, 8192, 64", "layout": "plain", "fw_ms": 1.0, "fwbw_ms": 5.0, "commit": "def5678"},
            {"shape": "1, 4, 8192, 64", "layout": "auto (128 x 1 chunks)", "fw_ms": 0.35, "fwbw_ms": 1.25},
            {"shape": "16, 4, 2048, 128", "layout": "auto (plain)", "fw_ms": 0.5, "fwbw_ms": 2.0},
            {"shape": "1, 4, 8192, 64", "layout": "chunk-parallel forward", "fw_ms": 0.25, "fwbw_ms": None},
            {"shape": "1, 4, 8192, 64", "layout": "variant", "fw_ms": 0.3, "fwbw_ms": 1.5, "fw_gpu_ms": 0.2,
             "fwbw_gpu_ms": 1.1},
            {"shape": "1, 4, 8192, 64", "layout": "checked", "fw_ms": 0.3, "fwbw_ms": 1.5,
             "max_err_vs_default": 0.0042}]
    out = tmp_path / "segments.md"
    rows = bench.provenance.merge_rows(tmp_path / "segments.json", rows, ("shape", "layout"))  # string keys merge
    bench.write_markdown(rows, out, "GPU X", "abc1234")
    text = out.read_text()
    assert "GPU X" in text and "abc1234" in text
    assert "| 1, 4, 8192, 64 | plain | 1.000 | 5.000 | 1.00 | – | def5678 |" in text
    assert "| 1, 4, 8192, 64 | auto (128 x 1 chunks) | 0.350 | 1.250 | 0.25 | – | – |" in text
    assert "| 16, 4, 2048, 128 | auto (plain) | 0.500 | 2.000 | nan | – | – |" in text  # no plain row to compare with
    assert "| 1, 4, 8192, 64 | chunk-parallel forward | 0.250 | – | – | – | – |" in text  # forward only
    assert "| 1, 4, 8192, 64 | variant | 0.300 | 1.500 | 0.30 | 0.200 / 1.100 | – |" in text  # with GPU time
    assert "| 1, 4, 8192, 64 | checked (within 0.0042 of the default's) | 0.300 |" in text  # checked on the device


def test_refuses_to_run_without_cuda(load_benchmark, monkeypatch):
    bench = load_benchmark("mlstm_segments")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--out", "unused"])


def test_shapes_option_and_the_plan_of_column_blocks(load_benchmark, monkeypatch):
    bench = load_benchmark("mlstm_segments")
    assert bench.parse_shapes("1,4,8192,256; 2,8,4096,512") == [(1, 4, 8192, 256), (2, 8, 4096, 512)]
    with pytest.raises(SystemExit, match="B,NH,S,DH"):
        bench.parse_shapes("1,4,8192")
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments as segments

    monkeypatch.setattr(segments, "_sm_count", lambda index: 132)  # an H100/H200, without a GPU here
    gpu = torch.device("cuda", 0)
    # by default heads wider than 64 over 1024+ steps take the chunk-parallel kernels: segments of 2 chunks of 32
    assert bench.plan(1, 4, 8192, 256, gpu) == (128, 2, True)
    assert bench.plan(8, 16, 4096, 256, gpu) == (64, 2, True)
    assert bench.plan(4, 8, 2048, 64, gpu) == (*segments.segment_plan(2048, 32, 32, gpu), False)  # 64 wide
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel

    monkeypatch.setattr(parallel, "PARALLEL_FORWARD", False)  # the chunk-walking layouts
    # 256-wide heads: column blocks of 128, value blocks of 128 (2), chunks of 32; 8 programs: 64 segments of 4
    assert bench.plan(1, 4, 8192, 256, gpu) == (64, 4, False)
    assert bench.plan(8, 16, 4096, 256, gpu) == (1, 128, False)  # 256 programs: plain
    assert bench.plan(2, 4, 4096, 128, gpu) == (*segments.segment_plan(4096, 32, 2 * 8, gpu), False)  # BV 64


def test_tile_sweep_sets_and_restores_the_column_and_value_blocks(load_benchmark):
    bench = load_benchmark("mlstm_segments")
    from xlstm_ts.kernels.mlstm import triton_chunkwise_ksplit as ksplit

    bench._set_tiles(64, 32)
    try:
        assert (ksplit.K_BLOCK, ksplit.VALUE_BLOCK_OVERRIDE) == (64, 32)
        assert ksplit.tiles(4096, 256, 256, 64, torch.bfloat16, grad=True)[1] == 32
    finally:
        bench._set_tiles(None, None)
    assert (ksplit.K_BLOCK, ksplit.VALUE_BLOCK_OVERRIDE) == (128, None)
    assert ksplit.tiles(4096, 256, 256, 64, torch.bfloat16, grad=True)[1] == 128  # value_block's own choice


def test_parallel_variants_name_existing_knobs(load_benchmark):
    """Each knob of --parallel-variants exists where the benchmark sets it (a renamed knob would time nothing)."""
    import importlib

    bench = load_benchmark("mlstm_segments")
    for label, settings in bench.PARALLEL_VARIANTS:
        differs = False
        for module, name, value in settings:
            mod = importlib.import_module(f"xlstm_ts.kernels.mlstm.{module}")
            assert hasattr(mod, name), (label, module, name)
            differs |= getattr(mod, name) != value
        assert differs, f"{label}: the variant equals the default"


def test_parallel_variants_set_their_knobs_time_the_default_first_and_restore(load_benchmark, monkeypatch):
    """--parallel-variants: a default-knobs row first, then each variant with all of its knobs set while it is timed
    (a stub kernel records them), restored after; --gpu-ms adds each call's device time. Timers and inputs are stubbed:
    no GPU here."""
    import triton.testing

    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    bench = load_benchmark("mlstm_segments")
    seen = []

    def kernel(*args):  # h = x * warps: h and dx tell the warps
        seen.append((parallel_bwd.GRAD_PARTS, parallel_bwd.NUM_WARPS))
        return (args[0] if args else torch.ones(2)) * float(parallel_bwd.NUM_WARPS)

    leaf = torch.ones(2, requires_grad=True)  # the timed fw+bw calls add to its .grad after each check
    monkeypatch.setattr(bench, "_inputs", lambda shape: (kernel, (), (leaf,)))
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: (fn(), 2.0)[1])
    monkeypatch.setattr(bench.gpu_time, "device_ms_per_call", lambda fn: (fn(), 1.0)[1])
    long = "void at::native::vectorized_elementwise_kernel<8, at::native::"
    monkeypatch.setattr(bench.gpu_time, "per_call_us",
                        lambda fn: (fn(), {"grad": 700.0, long + "add": 200.0, "bounds": 90.0, long + "fill": 10.0})[1])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    before = (parallel_bwd.GRAD_PARTS, parallel_bwd.NUM_WARPS)
    rows = bench.time_parallel_variants((1, 2, 2048, 128), 1, 1, only=["16 warps"], gpu_ms=True)
    labels = [row["layout"].split("segments, ")[1] for row in rows]
    assert labels[0] == "default knobs" and len(labels) == 4, labels
    split = labels.index("gradient kernel as dq, dk with gates (16 warps), dv (8 warps)")
    assert set(seen[:5]) == {before} and set(seen[5 * split : 5 * split + 5]) == {((3, 4, 2), 16)}
    assert (parallel_bwd.GRAD_PARTS, parallel_bwd.NUM_WARPS) == before
    assert all(row["fwbw_gpu_ms"] == 1.0 and row["fwbw_ms"] == 2.0 for row in rows)
    assert all(row["fwbw_kernels_us"] == {"grad": 700.0, long[:48]: 210.0, "bounds": 90.0} for row in rows)
    warps = before[1]  # each variant's h and dx against the default's: relative RMS |16 - warps| / warps
    assert "max_err_vs_default" not in rows[0]
    sixteen = rows[labels.index("gradient kernel at 16 warps")]
    assert sixteen["max_err_vs_default"] == pytest.approx(abs(16 - warps) / warps)
    assert "fw_gpu_ms" not in bench.time_parallel_variants((1, 2, 2048, 128), 1, 1, only=["16 warps"])[0]
