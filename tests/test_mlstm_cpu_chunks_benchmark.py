"""benchmarks/mlstm_cpu_chunks.py: one row per chunk and pass, the rule's chunk marked, rows merged on rerun."""

import json

import torch


def test_cpu_chunk_benchmark_marks_the_rule_and_merges_reruns(load_benchmark, tmp_path):
    bench = load_benchmark("mlstm_cpu_chunks")
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--out", str(tmp_path), "--cases", "20,8;40,8", "--reps", "1", "--threads", "1"])
        bench.main(["--out", str(tmp_path), "--cases", "20,8", "--reps", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    # S=20: chunks 8 and 16, and one chunk (the rule: 20 <= 3 x 8); S=40: 8, 16, 32 and one (the rule: 8)
    assert [(r["S"], r["chunk"]) for r in rows if r["pass"] == "fw+bw"] == [
        (20, "8"), (20, "16"), (20, "one"), (40, "8"), (40, "16"), (40, "32"), (40, "one")]  # fmt: skip
    assert {r["S"]: r["rule"] for r in rows} == {20: "one", 40: "8"}
    assert all(r["ms"] > 0 for r in rows)
    merged = json.loads((tmp_path / "mlstm_cpu_chunks.json").read_text())
    assert len(merged) == len(rows)  # the rerun of S=20 replaced its rows
    text = (tmp_path / "mlstm_cpu_chunks.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| CPU")]
    assert len(lines) == 4  # (20, 40) x (fw+bw, fw without gradients)
    s20 = next(line for line in lines if "| 20 | 8 | fw+bw |" in line)
    cells = [c.strip() for c in s20.split("|")]
    assert cells[6:11][3] == "–" and cells[6:11][4].startswith("**")  # no chunk 64 at S=20; one chunk in bold
    s40 = next(line for line in lines if "| 40 | 8 | fw+bw |" in line)
    assert [c.strip() for c in s40.split("|")][6].startswith("**")  # chunk 8 in bold


def test_slice_rows_time_one_pass_and_the_kernels_slices(load_benchmark, tmp_path, monkeypatch):
    from xlstm_ts.kernels.mlstm import chunkwise_torch

    bench = load_benchmark("mlstm_cpu_chunks")
    monkeypatch.setattr(bench, "SLICE_CASES", [(20, 8)])
    monkeypatch.setattr(bench, "SLICE_ROWS", 12)
    monkeypatch.setattr(chunkwise_torch, "_CPU_SLICE_BYTES", 5 * 4 * 20 * 20 * 8)  # slices of 5 rows
    calls = []
    original = chunkwise_torch.mlstm_chunkwise_torch
    monkeypatch.setattr(chunkwise_torch, "mlstm_chunkwise_torch", lambda *a, **kw: calls.append(len(a[0])) or
                        original(*a, **kw))  # fmt: skip
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--out", str(tmp_path), "--cases", "20,8", "--reps", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    slices = [r for r in rows if "12 rows" in r["pass"]]
    assert [r["pass"] for r in slices] == ["fw, no grad, 12 rows, one pass", "fw, no grad, 12 rows, slices"]
    assert all(r["chunk"] == "one" and r["ms"] > 0 for r in slices)
    assert chunkwise_torch._cpu_rows(4, 20, 20) == 5  # restored after the one-pass timing
    assert 5 in calls and 2 in calls  # the sliced timing ran slices of 5, 5 and 2 rows
