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


def test_variants_set_every_knob_and_the_defaults_are_a_variant(load_benchmark):
    """Each variant names every knob of its pass, so its name keeps its meaning when a module default changes; the
    module defaults are the variants `fastest` falls back to (the pair timed fastest on a GPU)."""
    import importlib

    bench = load_benchmark("mlstm_one_chunk")
    for table, base in ((bench.FORWARD, bench.FORWARD_BASE), (bench.BACKWARD, bench.BACKWARD_BASE)):
        assert all(set(settings) == set(base) for settings in table.values())

    def default(key):
        module, attr = bench.KNOBS[key]
        return getattr(importlib.import_module(f"xlstm_ts.kernels.mlstm.{module}"), attr)

    forward = bench.FORWARD[bench.fastest([], "forward")]
    assert {key: default(key) for key in forward} == forward
    backward = {k: v for k, v in bench.BACKWARD[bench.fastest([], "forward + backward")].items() if k.startswith("bwd")}
    assert {key: default(key) for key in backward} == backward
