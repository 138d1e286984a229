"""The sm_90 resource table of the chunk-parallel mLSTM variants: programs per SM, which kernels a variant lists, knobs
restored, the markdown. Compilation is stubbed here (`tests/kernels/test_sm90_resources.py` compiles for real)."""

import pytest


@pytest.mark.parametrize(
    ("warps", "regs", "smem", "expected"),
    [(4, 255, 122880, 1), (4, 255, 73728, 2), (8, 128, 49152, 2), (8, 246, 49152, 1), (4, 48, 256, 10),
     (2, 32, 0, 32)],  # fmt: skip
)
def test_programs_per_sm(load_benchmark, warps, regs, smem, expected):
    """Registers go to warps in blocks of 256 (255 per thread -> 8192 per warp), 1 KB of shared memory is reserved
    per program, and an SM holds at most 64 warps."""
    assert load_benchmark("mlstm_parallel_sm90").per_sm(warps, regs, smem) == expected


def test_variant_rows_list_the_kernels_it_changes_and_restore_the_knobs(load_benchmark, monkeypatch, tmp_path):
    import xlstm_ts.kernels._testing_sm90 as sm90
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel as parallel
    from xlstm_ts.kernels.mlstm import triton_chunkwise_parallel_bwd as parallel_bwd

    bench = load_benchmark("mlstm_parallel_sm90")
    monkeypatch.setattr(bench, "SHAPE", (1, 2, 256, 128))  # eight 64-step segments, the same tiles, less to record

    def fake_compile(kernel, args, meta):  # resources follow the launch options: a stand-in for ptxas
        warps = meta.get("num_warps", 4)
        regs = meta.get("maxnreg") or 255
        return {"kernel": kernel.__name__, "num_warps": warps, "smem": 1000 * meta.get("num_stages", 3),
                "regs": regs, "stack": 0}  # fmt: skip

    monkeypatch.setattr(sm90, "compile_sm90", fake_compile)
    rule, before = parallel.auto_parallel, (parallel_bwd.NUM_WARPS, parallel_bwd.GRAD_MAXNREG)
    default = bench.variant_rows("default knobs", (), None)
    kernels = [r["direction"] for r in default]
    assert kernels == ["_mlstm_bounds_fwd_kernel_tl", "_mlstm_chunk_out_kernel_tl", "_mlstm_bounds_rows_kernel_tl",
                       "_mlstm_bounds_bwd_kernel_tl", "_mlstm_chunk_bwd_kernel_tl part 0"]  # fmt: skip
    assert parallel.auto_parallel is rule  # the default rule is back after recording

    module = "triton_chunkwise_parallel_bwd"
    settings = ((module, "NUM_WARPS", 8), (module, "GRAD_MAXNREG", 128))
    by_kernel = {r["direction"]: r for r in default}
    changed = bench.variant_rows("capped", settings, by_kernel)
    assert [r["direction"] for r in changed] == ["_mlstm_chunk_bwd_kernel_tl part 0"]  # the other kernels are as before
    assert changed[0]["options"] == {"num_warps": 8, "maxnreg": 128} and changed[0]["per_sm"] == 2
    assert (parallel_bwd.NUM_WARPS, parallel_bwd.GRAD_MAXNREG) == before  # restored

    rows = [{**r, "commit": "abc1234"} for r in default + changed]
    bench.write_markdown(rows, tmp_path / "t.md")
    text = (tmp_path / "t.md").read_text()
    row = "| abc1234 | capped | `_mlstm_chunk_bwd_kernel_tl part 0` | num_warps 8, maxnreg 128 | 128 | 0 | 3000 | 2 |"
    assert row in text
