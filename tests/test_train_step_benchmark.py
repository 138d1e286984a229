"""The training-step benchmark runs on the CPU, records its rows and writes its table (no speed is asserted)."""

import importlib.util
import json

import pytest


def test_train_step_rows_and_table(load_benchmark, tmp_path, one_thread):
    bench = load_benchmark("train_step")
    argv = ["--device", "cpu", "--cases", "2,8,16,ms", "--warmup", "0", "--reps", "2", "--out", str(tmp_path)]
    rows = bench.main(argv)
    has_nxai = importlib.util.find_spec("xlstm") is not None
    assert [r["variant"] for r in rows] == ["ours"] + (["nxai"] if has_nxai else [])
    ours = rows[0]
    assert (ours["B"], ours["S"], ours["D"], ours["pattern"]) == (2, 8, 16, "ms")
    assert ours["step_ms"] > 0 and ours["tokens_per_s"] == pytest.approx(2 * 8 / ours["step_ms"] * 1e3)
    assert ours["peak_gb"] is None and ours["params"] > 0
    bench.main(argv)  # a rerun replaces the rows of the same device, shape, pattern and variant
    saved = json.loads((tmp_path / "train_step.json").read_text())
    assert len(saved) == len(rows)
    table = (tmp_path / "train_step.md").read_text()
    assert "| 2, 8, 16 | ms |" in table
    with pytest.raises(SystemExit):
        bench.main(["--cases", "2,8,ms"])


def test_same_widths_as_nxai(load_benchmark):
    pytest.importorskip("xlstm", reason="the NX-AI stack is an optional benchmark dependency")
    bench = load_benchmark("train_step")
    for pattern in ("mm", "ss", "ms"):
        ours, theirs = bench.ours(32, 16, pattern, "cpu"), bench.nxai(32, 16, pattern, "cpu", "vanilla")
        n_ours = sum(p.numel() for p in ours.parameters())
        n_theirs = sum(p.numel() for p in theirs.parameters())
        assert abs(n_ours - n_theirs) / n_theirs < 0.1, (pattern, n_ours, n_theirs)
