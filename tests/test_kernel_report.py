"""The kernel benchmark's report: ratios against the same-run NX-AI anchors and the goals' verdicts."""

import json

import pytest


@pytest.fixture(scope="module")
def report(load_benchmark):
    return load_benchmark("kernels_report")


def _mlstm(kernel, fw, fwbw, shape=(1024, 4, 64, 32), **extra):
    B, NH, S, DH = shape
    return {"op": "mlstm", "B": B, "NH": NH, "S": S, "DH": DH, "dtype": "bfloat16", "kernel": kernel,
            "fw_ms": fw, "fwbw_ms": fwbw, **extra}  # fmt: skip


def _data(anchor_rows):
    rows = [_mlstm("mlstm_chunkwise--triton", 0.5, 3.0, chunk_size=32, num_warps=4),
            _mlstm("mlstm_chunkwise--triton", 0.2, 0.5, chunk_size=64, num_warps="default"),
            _mlstm("sdpa_causal", 0.1, 0.25),
            _mlstm("mlstm_chunkwise--triton", 0.2, 1.0, shape=(64, 4, 512, 64), chunk_size=64, num_warps="default"),
            _mlstm("sdpa_causal", 0.1, 0.5, shape=(64, 4, 512, 64)),
            {"op": "slstm", "B": 64, "S": 512, "D": 256, "NH": 4, "DH": 64, "dtype": "float32",
             "kernel": "slstm--triton", "fw_ms": 2.0, "fwbw_ms": 10.0}]  # fmt: skip
    meta = {"device": "GPU X", "torch": "2.11", "triton": "3.6", "warmup": 10, "reps": 30, "anchors": "ran",
            "gpu_tests": "90 passed"}  # fmt: skip
    return {"meta": meta, "rows": rows, "anchor_rows": anchor_rows}


def test_report_judges_each_goal_from_same_run_ratios(report, tmp_path):
    anchors = [_mlstm("chunkwise--triton_limit_chunk", 0.4, 2.0, cfg="ts_patched"),
               _mlstm("chunkwise--triton_limit_chunk", 0.3, 1.5, shape=(64, 4, 512, 64), cfg="ts_small"),
               {"kernel": "slstm_cuda", "B": 64, "S": 512, "D": 256, "NH": 4, "fw_ms": 8.0, "fwbw_ms": 25.0},
               {"cfg": "ts_long", "kernel": "chunkwise--triton_xl_chunk", "error": "RuntimeError('abort')"}]
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(_data(anchors)))
    text = report.write(path).read_text()
    # the best of ours (fw+bw 0.5 ms) against theirs 2.0 ms: 0.25x, under the 0.33x goal; forward has no goal here
    assert "| 0.200 / 0.500 | 0.400 / 2.000 | 0.25x (met, goal <= 0.33x) | 0.50x |" in text
    # 1.0 / 1.5 = 0.67x misses the 0.5x goal; forward 0.2 / 0.3 meets it
    assert "0.67x (missed, goal <= 0.5x) | 0.67x (missed, goal <= 0.5x) |" in text
    assert "| sLSTM (64, 512, 256, 4) float32, slstm_cuda | 2.000 / 10.000 | 8.000 / 25.000 | 0.40x (met" in text
    assert "| 1024, 4, 64, 32 | 0.200 / 0.500 | 0.200 / 0.500 (64, default) | 0.100 / 0.250 | 2.0x | – |" in text
    assert "Anchor runs that failed: chunkwise--triton_xl_chunk: RuntimeError('abort')" in text
    assert "Device: GPU X" in text and "90 passed" in text


def test_forward_goal_uses_our_fastest_forward(report, tmp_path):
    # a launch with the fastest forward alone (chunk 16) is not the one with the fastest forward + backward
    data = _data([_mlstm("chunkwise--triton_limit_chunk", 0.4, 2.0, cfg="ts_patched")])
    data["rows"].append(_mlstm("mlstm_chunkwise--triton", 0.1, 0.9, chunk_size=16, num_warps=4))
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(data))
    text = report.write(path).read_text()
    assert "| 0.100 / 0.500 | 0.400 / 2.000 | 0.25x (met, goal <= 0.33x) | 0.25x |" in text


def test_opt_in_slstm_kernel_is_reported_beside_the_default(report, tmp_path):
    data = _data([{"kernel": "slstm_cuda", "B": 64, "S": 512, "D": 256, "NH": 4, "fw_ms": 8.0, "fwbw_ms": 25.0}])
    data["rows"].append({"op": "slstm", "B": 64, "S": 512, "D": 256, "NH": 4, "DH": 64, "dtype": "bfloat16",
                         "kernel": "slstm--triton_fp32r", "fw_ms": 1.0, "fwbw_ms": 5.0})  # fmt: skip
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(data))
    text = report.write(path).read_text()
    assert "| 64, 512, 256, 4 | bfloat16 (slstm--triton_fp32r: fp32 R re-read, opt-in) | 1.000 / 5.000 |" in text
    opt_in = ("| sLSTM (64, 512, 256, 4) bfloat16 (slstm--triton_fp32r: fp32 R re-read, opt-in), slstm_cuda "
              "| 1.000 / 5.000 ")
    assert opt_in in text
    assert "| sLSTM (64, 512, 256, 4) float32, slstm_cuda | 2.000 / 10.000 |" in text


def test_report_says_when_no_anchor_ran(report):
    text = report.render(_data([{"kernel": "slstm", "error": "ImportError('skipped')"}]))
    assert "No NX-AI anchor ran at a goal shape in this run." in text
    assert "met" not in text


def test_ceilings_table_uses_the_work_models(report, tmp_path):
    work = report.mlstm_work(1024, 4, 64, 32)
    # one chunk of 64: 2 * B * NH * S * (2 * 64 * 32 + 2 * 32 * 32) FLOPs forward; bf16 q, k, v, h, i, f bytes
    assert work["fw_flops"] == 2 * 1024 * 4 * 64 * (2 * 64 * 32 + 2 * 32 * 32)
    assert work["fwbw_flops"] == 3 * work["fw_flops"]
    assert work["fw_bytes"] == 2 * 1024 * 4 * 64 * (4 * 32 + 2)
    assert report.mlstm_work(1, 1, 20, 16)["fw_flops"] == 2 * 20 * (2 * 32 * 16 + 2 * 16 * 16)  # chunk 32 for S = 20
    data = _data([])
    data["meta"]["ceilings"] = {"copy_gbs": 4000.0, "bf16_tflops": 800.0}
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(data))
    text = report.write(path).read_text()
    fw_tflops = work["fw_flops"] / 0.2e-3 / 1e12  # the default launch's forward took 0.2 ms
    assert f"| 1024, 4, 64, 32 | {fw_tflops:.1f} ({100 * fw_tflops / 800:.1f} %) |" in text
    assert "Measured in the same run: copy bandwidth 4000 GB/s" in text
    # ceilings carried over from another run of the device say where they come from
    data["meta"]["ceilings"]["measured"] = "on this device at abc1234, an earlier run"
    path.write_text(json.dumps(data))
    text = report.write(path).read_text()
    assert "Measured on this device at abc1234, an earlier run: copy bandwidth 4000 GB/s" in text
    data["meta"].pop("ceilings")
    path.write_text(json.dumps(data))
    assert "ceilings" not in report.write(path).read_text()


def test_peak_memory_goal_is_judged_from_same_run_rows(report):
    peak = lambda kernel, gb: {"op": "mlstm_peak", "B": 8, "NH": 8, "S": 8192, "DH": 512, "dtype": "bfloat16",
                               "kernel": kernel, "peak_gb": gb}  # fmt: skip
    data = _data([])
    data["rows"] += [peak("mlstm_chunkwise--triton", 7.0), peak("chunkwise--triton_limit_chunk", 25.0)]
    text = report.render(data)
    assert "| 8, 8, 8192, 512 | mlstm_chunkwise--triton | 7.00 |" in text
    assert "Ours / mlstm_kernels': 0.28x (met, goal <= 1x)." in text
    data["rows"][-1] = peak("chunkwise--triton_limit_chunk", 6.0)
    assert "1.17x (missed, goal <= 1x)" in report.render(data)
    assert "Peak memory" not in report.render(_data([]))


def test_wide_head_goals_are_judged(report):
    data = _data([_mlstm("chunkwise--triton_limit_chunk", 11.8, 42.0, shape=(8, 8, 8192, 512), cfg="llm_7b")])
    data["rows"].append(_mlstm("mlstm_chunkwise--triton", 17.4, 116.5, shape=(8, 8, 8192, 512), chunk_size=64,
                               num_warps="default"))  # fmt: skip
    data["rows"].append(_mlstm("sdpa_causal", 32.6, 284.5, shape=(8, 8, 8192, 512)))
    text = report.render(data)
    assert "| mLSTM (8, 8, 8192, 512) bf16, chunkwise--triton_limit_chunk | 17.400 / 116.500 | 11.800 / 42.000 | " \
           "2.77x (missed, goal <= 0.85x) | 1.47x |" in text


def test_report_of_a_renamed_json_is_written_beside_it_under_its_own_name(report, tmp_path):
    # a run kept for a second device (kernels_h100.json) renders kernels_h100.md and leaves kernels.md alone
    (tmp_path / "kernels.md").write_text("the first device's report")
    path = tmp_path / "kernels_h100.json"
    path.write_text(json.dumps(_data([_mlstm("chunkwise--triton_limit_chunk", 0.4, 2.0, cfg="ts_patched")])))
    written = report.write(path)
    assert written == tmp_path / "kernels_h100.md"
    assert "| 0.200 / 0.500 | 0.400 / 2.000 | 0.25x (met, goal <= 0.33x) |" in written.read_text()
    assert (tmp_path / "kernels.md").read_text() == "the first device's report"
