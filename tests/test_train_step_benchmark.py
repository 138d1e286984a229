"""The training-step benchmark runs on the CPU, records its rows and writes its table (no speed is asserted)."""

import importlib.util
import json

import pytest
import torch


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
    # a rerun of a subset replaces every row of its case: a table line never mixes runs
    assert [r["variant"] for r in bench.main([*argv, "--variants", "ours"])] == ["ours"]
    saved = json.loads((tmp_path / "train_step.json").read_text())
    assert [r["variant"] for r in saved] == ["ours"]
    rows = [{**saved[0], "matmul_precision": p} for p in ("high", "highest")]  # GPU rows at two precisions
    bench.record(rows[:1], tmp_path)
    bench.record(rows[1:], tmp_path)  # the other precision's run keeps the first one's row
    saved = json.loads((tmp_path / "train_step.json").read_text())
    assert [r["matmul_precision"] for r in saved[-2:]] == ["high", "highest"]
    table = (tmp_path / "train_step.md").read_text()
    assert "| 2, 8, 16 | ms |" in table
    with pytest.raises(SystemExit):
        bench.main(["--cases", "2,8,ms"])
    with pytest.raises(SystemExit):  # graphs and autocast variants need CUDA
        bench.main([*argv, "--variants", "ours-compiled-bf16-graph"])


def test_same_widths_as_nxai(load_benchmark):
    pytest.importorskip("xlstm", reason="the NX-AI stack is an optional benchmark dependency")
    bench = load_benchmark("train_step")
    for pattern in ("mm", "ss", "ms"):
        ours, theirs = bench.ours(32, 16, pattern, "cpu"), bench.nxai(32, 16, pattern, "cpu", "vanilla")
        n_ours = sum(p.numel() for p in ours.parameters())
        n_theirs = sum(p.numel() for p in theirs.parameters())
        assert abs(n_ours - n_theirs) / n_theirs < 0.1, (pattern, n_ours, n_theirs)


def test_table_ratios_and_best_variant(load_benchmark, tmp_path):
    """Every variant's cell is its time and its ratio to NX-AI's step; the fastest of ours is marked."""
    bench = load_benchmark("train_step")
    base = {"device": "GPU", "B": 4, "S": 8, "D": 16, "pattern": "ms", "matmul_precision": "high", "params": 10,
            "slstm_backend": "", "first_step_s": 2.0, "peak_gb": 1.0}  # fmt: skip
    times = {"nxai": 40.0, "ours": 20.0, "ours-compiled": 10.0, "ours-compiled-bf16-graph": 4.0}
    rows = [{**base, "variant": v, "step_ms": ms, "tokens_per_s": 32 / ms * 1e3} for v, ms in times.items()]
    bench.write_markdown(rows, tmp_path / "t.md")
    line = (tmp_path / "t.md").read_text().splitlines()[-1]
    assert "| 20.00 (0.500x) |" in line and "| 10.00 (0.250x, 2 s) |" in line
    assert "**4.00** (0.100x, 2 s)" in line and line.count("| – |") == 3  # NX-AI bf16, bf16 eager, compiled + graph
    assert "| 0.100x | 0.008 |" in line  # best against the fastest NX-AI step (fp32 here), then M tokens/s
    # NX-AI under autocast: ratios stay against its fp32 step; the best is also shown against the faster bf16 step
    rows.append({**base, "variant": "nxai-bf16", "step_ms": 25.0, "tokens_per_s": 32 / 25.0 * 1e3})
    # the same case at another matmul precision is a line of its own
    rows += [{**r, "matmul_precision": "highest", "step_ms": 2 * r["step_ms"]} for r in rows[:2]]
    bench.write_markdown(rows, tmp_path / "t.md")
    lines = (tmp_path / "t.md").read_text().splitlines()
    high, highest = lines[-2], lines[-1]
    assert high.startswith("| GPU (high) |") and "| 25.00 |" in high and "**4.00** (0.100x, 2 s)" in high
    assert "| 0.160x |" in high
    assert highest.startswith("| GPU (highest) |") and "| 80.00 (0.0008) |" in highest
    assert "**40.00** (0.500x)" in highest


def test_profile_kinds_and_summary(load_benchmark, tmp_path):
    bench = load_benchmark("train_step_profile")
    assert bench.kind_of("_mlstm_chunkwise_fwd_kernel_tl") == "mlstm"
    assert bench.kind_of("_slstm_bwd_kernel") == "slstm"
    assert bench.kind_of("nvjet_tst_128x64_64x8_1x1_v_bz_TNN") == "matmul"
    assert bench.kind_of("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert bench.kind_of("triton_poi_fused_add_mul_silu_0") == "fused"
    assert bench.kind_of("_causal_conv_grad_kernel_tl") == "conv"
    assert bench.kind_of("_group_dw_kernel_tl") == "conv"  # the fused conv + q/k/v op's weight gradients
    assert bench.kind_of("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdam>") == "optimizer"
    assert bench.kind_of("void at::native::vectorized_elementwise_kernel<4, FillFunctor>") == "other"
    kernels = {"triton_poi_fused_a": (3000.0, 6), "_mlstm_fwd": (1000.0, 2), "gemm_x": (500.0, 4), "copy": (100.0, 2)}
    row = bench.summarize(kernels, steps=2)
    assert row["kernel_ms"] == pytest.approx(2.3) and row["launches_per_step"] == 7
    assert row["by_kind_ms"] == {"mlstm": 0.5, "slstm": 0.0, "conv": 0.0, "matmul": 0.25, "fused": 1.5,
                                 "optimizer": 0.0, "other": 0.05}  # fmt: skip
    assert [t["name"] for t in row["top"]] == ["triton_poi_fused_a", "_mlstm_fwd", "gemm_x", "copy"]
    assert row["top"][0]["calls"] == 3
    assert [t["name"] for t in row["top_by_kind"]["other"]] == ["copy"] and row["top_by_kind"]["slstm"] == []
    assert [t["name"] for t in bench.summarize(kernels, steps=2, top=2)["top"]] == ["triton_poi_fused_a", "_mlstm_fwd"]
    fake = {**row, "eager_step_ms": 3.0, "graph_step_ms": 2.5, "device": "GPU", "commit": "abc", "B": 1, "S": 2,
            "D": 3, "pattern": "m"}  # fmt: skip
    bench.write_markdown([fake], tmp_path / "p.md")
    text = (tmp_path / "p.md").read_text()
    assert "| GPU, abc | 1, 2, 3 | m | 2.50 | 3.00 | 2.30 | 7 | 0.50 | 0.00 | 0.00 | 0.25 | 1.50 | 0.00 | 0.05 |" in (
        text
    )
    bench.write_markdown([{**fake, "settings": "conv.triton_conv_qkv.ENABLED=True"}], tmp_path / "set.md")
    assert "| GPU, abc, conv.triton_conv_qkv.ENABLED=True | 1, 2, 3 | m |" in (tmp_path / "set.md").read_text()
    old = {**fake, "by_kind_ms": {k: v for k, v in row["by_kind_ms"].items() if k != "conv"}}  # a row from before
    bench.write_markdown([old], tmp_path / "old.md")
    assert "| 7 | 0.50 | 0.00 | – | 0.25 |" in (tmp_path / "old.md").read_text()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # the profile needs CUDA
            bench.main(["--out", str(tmp_path)])


def test_settings_apply_to_the_run_and_show_in_the_table(load_benchmark, tmp_path, one_thread, monkeypatch):
    from xlstm_ts.kernels.conv import triton_conv_qkv

    bench = load_benchmark("train_step")
    seen = []
    real_run = bench.run
    monkeypatch.setattr(bench, "run", lambda args: seen.append(triton_conv_qkv.DW_ROWS) or real_run(args))
    argv = ["--device", "cpu", "--cases", "2,8,16,m", "--warmup", "0", "--reps", "1", "--variants", "ours",
            "--out", str(tmp_path), "--set", "conv.triton_conv_qkv.DW_ROWS=256"]
    before = triton_conv_qkv.DW_ROWS
    rows = bench.main(argv)
    assert seen == [256] and triton_conv_qkv.DW_ROWS == before  # set for the run, restored after
    assert rows[0]["settings"] == "conv.triton_conv_qkv.DW_ROWS=256"
    assert "(conv.triton_conv_qkv.DW_ROWS=256) | 2, 8, 16 | m |" in (tmp_path / "train_step.md").read_text()
    for bad in ("conv.triton_conv_qkv.NOPE=1", "nowhere.X=1", "conv.triton_conv_qkv.DW_ROWS=abc"):
        with pytest.raises(SystemExit):
            bench.main([*argv[:-1], bad])


def test_profile_settings_apply_to_the_cases(load_benchmark, tmp_path, monkeypatch):
    """train_step_profile.py --set: each case is profiled with the setting on, which is restored afterwards; the
    profile itself (CUDA) is replaced by a stub that records what it saw."""
    from xlstm_ts.kernels.conv import triton_conv_qkv

    bench = load_benchmark("train_step_profile")
    seen = []

    def fake_case(case, args):
        seen.append(triton_conv_qkv.ENABLED)
        return {"kernel_ms": 1.0, "by_kind_ms": {}, "launches_per_step": 3, "top": [], "eager_step_ms": 2.0,
                "graph_step_ms": 1.5, "device": "GPU", "commit": "abc", "B": case[0], "S": case[1], "D": case[2],
                "pattern": case[3], "settings": bench.settings_label(args.settings)}  # fmt: skip

    monkeypatch.setattr(bench, "profile_case", fake_case)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    before = triton_conv_qkv.ENABLED
    rows = bench.main(["--cases", "1,2,3,m", "4,5,6,m", "--out", str(tmp_path), "--set",
                       f"conv.triton_conv_qkv.ENABLED={not before}"])  # fmt: skip
    assert seen == [not before, not before] and triton_conv_qkv.ENABLED == before
    assert rows[0]["settings"] == f"conv.triton_conv_qkv.ENABLED={not before}"
    table = (tmp_path / "train_step_profile.md").read_text()
    assert f"| GPU, abc, conv.triton_conv_qkv.ENABLED={not before} | 4, 5, 6 | m |" in table
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path), "--set", "conv.triton_conv_qkv.NOPE=1"])
