"""The NX-AI anchor runner of benchmarks/kernels.py: what it records when the script or its wheels are missing, the
JSON rows it collects, and the anchor script's sLSTM part left out under --only-mlstm (its mLSTM part under
--only-slstm)."""

import importlib.util
import sys

import pytest


@pytest.fixture
def anchor(load_benchmark):
    return load_benchmark("kernels_anchor")


FAKE = """import json, os, sys
print("2.11 3.6 some GPU")  # version lines are skipped
print(json.dumps({"kernel": "chunkwise--triton_limit_chunk", "configs": sys.argv[2],
                  "no_slstm": os.environ.get("NO_SLSTM"), "patched": os.environ.get("SLSTM_PATCHED")}))
print("[1, 2]")  # JSON that is not a row
"""


def test_missing_script_or_wheels_are_recorded(anchor, monkeypatch, tmp_path):
    monkeypatch.setattr(anchor, "ANCHOR", tmp_path / "absent.py")
    rows, note = anchor.anchor_rows()
    assert rows == [] and "not present" in note
    script = tmp_path / "anchor_kernels.py"
    script.write_text(FAKE)
    monkeypatch.setattr(anchor, "ANCHOR", script)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    rows, note = anchor.anchor_rows()
    assert rows == [] and "mlstm_kernels" in note and "not installed" in note


@pytest.mark.parametrize("part", [None, "mlstm", "slstm"], ids=["full", "only-mlstm", "only-slstm"])
def test_rows_of_each_anchor_process(anchor, monkeypatch, tmp_path, part):
    script = tmp_path / "anchor_kernels.py"
    script.write_text(FAKE)
    monkeypatch.setattr(anchor, "ANCHOR", script)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # the wheels "installed"
    monkeypatch.setattr(anchor.sys, "executable", sys.executable)
    rows, note = anchor.anchor_rows(part)
    assert "same device call" in note
    if part == "mlstm":  # one process, the mLSTM configs, the sLSTM part skipped
        assert rows == [{"kernel": "chunkwise--triton_limit_chunk", "configs": anchor.MLSTM_CONFIGS,
                         "no_slstm": "1", "patched": None}]  # fmt: skip
    elif part == "slstm":  # no mLSTM config: the long sLSTM shapes, then the patched ones
        assert [(r["configs"], r["no_slstm"], r["patched"]) for r in rows] == [
            ("none", None, None), ("none", None, "1")]  # fmt: skip
    else:  # the mLSTM configs with the long sLSTM shapes, then the patched sLSTM shapes alone
        assert [(r["configs"], r["no_slstm"], r["patched"]) for r in rows] == [
            (anchor.MLSTM_CONFIGS, None, None), ("none", None, "1")]  # fmt: skip


def test_an_unknown_part_is_refused(anchor):
    with pytest.raises(ValueError, match="got 'lstm'"):
        anchor.anchor_rows("lstm")


def test_tests_summary_is_the_last_line_without_its_frame(anchor, tmp_path):
    log = tmp_path / "tests.log"
    log.write_text("....\n===== 38 passed in 62.55s =====\n\n")
    assert anchor.tests_summary(log) == "38 passed in 62.55s" and anchor.tests_summary(None) is None


COUNTING = """import json, os, pathlib
calls = pathlib.Path(os.environ["CALLS"])
n = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(n))
fw, fwbw = [(0.5, 1.2), (0.15, 1.7), (0.3, 1.3)][n - 1]
print(json.dumps({"cfg": "ts_small", "kernel": "k", "fw_ms": fw, "fwbw_ms": fwbw}))
"""


def test_repeated_runs_keep_each_rows_fastest_medians(anchor, monkeypatch, tmp_path):
    script = tmp_path / "anchor_kernels.py"
    script.write_text(COUNTING)
    monkeypatch.setattr(anchor, "ANCHOR", script)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(anchor.sys, "executable", sys.executable)
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    rows, note = anchor.anchor_rows("mlstm", runs=3)
    assert (tmp_path / "calls").read_text() == "3" and "3 times" in note
    assert rows == [{"cfg": "ts_small", "kernel": "k", "fw_ms": 0.15, "fwbw_ms": 1.2}]


def test_fastest_merges_cases_and_prefers_timed_rows(anchor):
    first = [
        {"cfg": "a", "kernel": "k", "fw_ms": 0.537, "fwbw_ms": 1.275, "fw_tflops": 1.0},
        {"cfg": "b", "kernel": "k", "error": "RuntimeError('crash')"},
        {"cfg": "c", "kernel": "k", "error": "ImportError('skipped')"},
    ]
    second = [
        {"cfg": "a", "kernel": "k", "fw_ms": 0.149, "fwbw_ms": 1.326, "fw_tflops": 3.6},
        {"cfg": "b", "kernel": "k", "fw_ms": 2.0, "fwbw_ms": 4.0},
        {"cfg": "c", "kernel": "k", "error": "ImportError('skipped')"},
        {"cfg": "a", "kernel": "sdpa_causal", "fw_ms": 0.04, "fwbw_ms": 0.28},
    ]
    assert anchor.fastest([first, second]) == [
        {"cfg": "a", "kernel": "k", "fw_ms": 0.149, "fwbw_ms": 1.275, "fw_tflops": 3.6},  # fw's rate with fw
        {"cfg": "b", "kernel": "k", "fw_ms": 2.0, "fwbw_ms": 4.0},
        {"cfg": "c", "kernel": "k", "error": "ImportError('skipped')"},
        {"cfg": "a", "kernel": "sdpa_causal", "fw_ms": 0.04, "fwbw_ms": 0.28},
    ]
    assert anchor.fastest([first]) == first
