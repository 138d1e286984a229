"""benchmarks/conv_tiles.py: one row per kernel and tile, the op's own tiles marked, the module's tiles restored,
rows merged on rerun."""

import json

import pytest

pytest.importorskip("triton")


def test_conv_tiles_marks_the_defaults_and_restores_them(load_benchmark, tmp_path):
    from xlstm_ts.kernels.conv import triton_conv as tc

    bench = load_benchmark("conv_tiles")
    before = (tc.FWD_BLOCK, tc.GRAD_BLOCK, tc.GRAD_BLOCK_SHORT, tc.DX_BLOCK)
    rows = bench.main(["--out", str(tmp_path), "--cases", "2,20,16", "2,70,16", "--reps", "1"])
    bench.main(["--out", str(tmp_path), "--cases", "2,20,16", "--reps", "1"])
    assert (tc.FWD_BLOCK, tc.GRAD_BLOCK, tc.GRAD_BLOCK_SHORT, tc.DX_BLOCK) == before
    per_case = sum(len(tiles) for tiles in bench.TILES.values())
    assert len(rows) == 2 * per_case and all(r["ms"] > 0 for r in rows)
    for T in (20, 70):  # one default per kernel; the g kernel's depends on the sequence length
        defaults = {r["kernel"]: r["tile"] for r in rows if r["T"] == T and r["default"]}
        assert set(defaults) == set(bench.TILES)
        g_tile = tc.GRAD_BLOCK_SHORT if T <= tc.SHORT_STEPS else tc.GRAD_BLOCK
        assert defaults["backward, g tiles"] == "x".join(map(str, g_tile))
    assert len(json.loads((tmp_path / "conv_tiles.json").read_text())) == len(rows)  # the rerun replaced its rows
    lines = [line for line in (tmp_path / "conv_tiles.md").read_text().splitlines() if line.startswith("| CPU")]
    assert len(lines) == 2 * len(bench.TILES) and all(line.count("**") == 2 for line in lines)
