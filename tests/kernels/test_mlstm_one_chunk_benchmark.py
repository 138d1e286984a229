"""benchmarks/mlstm_one_chunk.py: a variant's knobs are set inside `knobs` (the forward's MIN_DQK at 16 unless given)
and restored afterwards, also when the block raises."""

import pytest

pytest.importorskip("triton")


def test_knobs_set_and_restored(load_benchmark):
    from xlstm_ts.kernels.mlstm import triton_chunkwise, triton_one_chunk_fwd

    bench = load_benchmark("mlstm_one_chunk")
    before = (triton_one_chunk_fwd.ENABLED, triton_one_chunk_fwd.MIN_DQK, triton_chunkwise.ONE_CHUNK_MAXNREG)
    with bench.knobs({"one": not before[0], "bwd_regs": 128}):
        assert triton_one_chunk_fwd.ENABLED is (not before[0]) and triton_one_chunk_fwd.MIN_DQK == 16
        assert triton_chunkwise.ONE_CHUNK_MAXNREG == 128
    with bench.knobs({"min_dqk": 32}):
        assert triton_one_chunk_fwd.MIN_DQK == 32
    with pytest.raises(RuntimeError), bench.knobs({"one": not before[0]}):
        raise RuntimeError("a failing variant")
    assert (triton_one_chunk_fwd.ENABLED, triton_one_chunk_fwd.MIN_DQK, triton_chunkwise.ONE_CHUNK_MAXNREG) == before
    with pytest.raises(KeyError), bench.knobs({"no_such_knob": 1}):
        pass
