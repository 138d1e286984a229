"""The segmented-layout benchmark's table: one row per shape and layout, fw+bw relative to the plain layout."""

import pytest
import torch


def test_markdown_ratios_against_plain(load_benchmark, tmp_path):
    bench = load_benchmark("mlstm_segments")
    rows = [{"shape": "1, 4, 8192, 64", "layout": "plain", "fw_ms": 1.0, "fwbw_ms": 5.0},
            {"shape": "1, 4, 8192, 64", "layout": "auto (128 x 1 chunks)", "fw_ms": 0.35, "fwbw_ms": 1.25},
            {"shape": "16, 4, 2048, 128", "layout": "auto (plain)", "fw_ms": 0.5, "fwbw_ms": 2.0}]  # fmt: skip
    out = tmp_path / "segments.md"
    rows = bench.provenance.merge_rows(tmp_path / "segments.json", rows, ("shape", "layout"))  # string keys merge
    bench.write_markdown(rows, out, "GPU X", "abc1234")
    text = out.read_text()
    assert "GPU X" in text and "abc1234" in text
    assert "| 1, 4, 8192, 64 | plain | 1.000 | 5.000 | 1.00 |" in text
    assert "| 1, 4, 8192, 64 | auto (128 x 1 chunks) | 0.350 | 1.250 | 0.25 |" in text
    assert "| 16, 4, 2048, 128 | auto (plain) | 0.500 | 2.000 | nan |" in text  # no plain row to compare with


def test_refuses_to_run_without_cuda(load_benchmark, monkeypatch):
    bench = load_benchmark("mlstm_segments")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.main(["--out", "unused"])
