"""`benchmarks/kernels.py --only-mlstm` / `--only-slstm`: the new rows of one part beside the earlier run's rows of the
other part, notes naming the run of each."""

import json

import pytest


@pytest.fixture(scope="module")
def carry(load_benchmark):
    return load_benchmark("kernels_carry")


def _file(device, commit, mlstm_ms, slstm_ms):
    rows = [{"op": "mlstm", "B": 1, "NH": 4, "S": 64, "DH": 32, "kernel": "mlstm_chunkwise--triton", "fw_ms": mlstm_ms,
             "fwbw_ms": 2 * mlstm_ms},
            {"op": "mlstm_peak", "kernel": "mlstm_chunkwise--triton", "peak_gb": mlstm_ms},
            {"op": "slstm", "B": 16, "S": 2048, "D": 512, "NH": 4, "kernel": "slstm--triton", "fw_ms": slstm_ms,
             "fwbw_ms": 3 * slstm_ms}]  # fmt: skip
    anchors = [{"cfg": "ts_small", "kernel": "chunkwise--triton_limit_chunk", "fw_ms": 9.0 * mlstm_ms},
               {"kernel": "slstm_cuda", "B": 16, "fw_ms": 25.0 * slstm_ms},
               {"kernel": "sdpa_causal", "fw_ms": 0.1 * mlstm_ms}]  # fmt: skip
    meta = {"device": device, "commit": commit, "anchors": f"ran at {commit}", "gpu_tests": f"{commit}: 9 passed",
            "ceilings": {"copy_gbps": 1000.0 * mlstm_ms}}  # fmt: skip
    return {"meta": meta, "rows": rows, "anchor_rows": anchors}


def _only(part, commit, mlstm_ms, slstm_ms):
    """What a run timing one part writes before the carry: that part's rows and anchors only."""
    data = _file("H200", commit, mlstm_ms, slstm_ms)
    slstm = lambda r: r.get("op") == "slstm" or r["kernel"].startswith("slstm")
    keep = slstm if part == "slstm" else (lambda r: not slstm(r))
    data["rows"] = [r for r in data["rows"] if keep(r)]
    data["anchor_rows"] = [a for a in data["anchor_rows"] if keep(a)]
    if part == "slstm":
        data["meta"]["ceilings"] = None  # measured beside the mLSTM rows only
    return data


def test_keeps_the_earlier_slstm_rows_and_takes_the_new_mlstm_rows(carry, tmp_path):
    earlier = tmp_path / "kernels.json"
    earlier.write_text(json.dumps(_file("H200", "aaa", 1.0, 7.0)))
    merged = carry.carry_part(_only("mlstm", "bbb", 0.5, 99.0), earlier, kept="slstm")
    assert {r["op"]: r.get("fw_ms", r.get("peak_gb")) for r in merged["rows"]} == {
        "mlstm": 0.5, "mlstm_peak": 0.5, "slstm": 7.0}  # fmt: skip
    assert sorted((a["kernel"], a["fw_ms"]) for a in merged["anchor_rows"]) == [
        ("chunkwise--triton_limit_chunk", 4.5), ("sdpa_causal", 0.05), ("slstm_cuda", 175.0)]  # fmt: skip
    meta = merged["meta"]
    assert meta["parts"]["slstm"]["commit"] == "aaa" and meta["parts"]["mlstm"]["commit"] == "bbb"
    assert meta["anchors"] == ("ran at bbb (mLSTM part at bbb); the sLSTM rows, ours and NX-AI's, are kept from "
                               "the run at aaa: ran at aaa")  # fmt: skip
    assert meta["gpu_tests"] == "bbb: 9 passed; for the sLSTM rows: aaa: 9 passed"
    assert meta["ceilings"] == {"copy_gbps": 500.0}  # this run's, measured beside its mLSTM rows


def test_keeps_the_earlier_mlstm_rows_and_ceilings_and_takes_the_new_slstm_rows(carry, tmp_path):
    earlier = tmp_path / "kernels.json"
    earlier.write_text(json.dumps(_file("H200", "aaa", 1.0, 7.0)))
    merged = carry.carry_part(_only("slstm", "bbb", 99.0, 2.0), earlier, kept="mlstm")
    assert {r["op"]: r.get("fw_ms", r.get("peak_gb")) for r in merged["rows"]} == {
        "mlstm": 1.0, "mlstm_peak": 1.0, "slstm": 2.0}  # fmt: skip
    assert sorted((a["kernel"], a["fw_ms"]) for a in merged["anchor_rows"]) == [
        ("chunkwise--triton_limit_chunk", 9.0), ("sdpa_causal", 0.1), ("slstm_cuda", 50.0)]  # fmt: skip
    meta = merged["meta"]
    assert meta["ceilings"] == {"copy_gbps": 1000.0}
    assert meta["anchors"].startswith("ran at bbb (sLSTM part at bbb); the mLSTM rows")
    assert meta["gpu_tests"] == "bbb: 9 passed; for the mLSTM rows: aaa: 9 passed"


def test_carrying_back_and_forth_names_each_parts_own_run(carry, tmp_path):
    """An --only-slstm run after an --only-mlstm run keeps the mLSTM rows with the notes of their own run (not the
    composite notes of that file); a second --only-mlstm run then names the sLSTM run once, without nesting."""
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(_file("H200", "aaa", 1.0, 7.0)))
    path.write_text(json.dumps(carry.carry_part(_only("mlstm", "bbb", 0.5, 0.0), path, kept="slstm")))
    path.write_text(json.dumps(carry.carry_part(_only("slstm", "ccc", 0.0, 3.0), path, kept="mlstm")))
    meta = json.loads(path.read_text())["meta"]
    assert meta["anchors"] == ("ran at ccc (sLSTM part at ccc); the mLSTM rows, ours and NX-AI's, are kept from "
                               "the run at bbb: ran at bbb")  # fmt: skip
    assert meta["gpu_tests"] == "ccc: 9 passed; for the mLSTM rows: bbb: 9 passed"
    merged = carry.carry_part(_only("mlstm", "ddd", 0.25, 0.0), path, kept="slstm")
    assert merged["meta"]["anchors"].endswith("are kept from the run at ccc: ran at ccc")
    assert [r["fw_ms"] for r in merged["rows"] if r["op"] != "mlstm_peak"] == [0.25, 3.0]


def test_refuses_a_missing_file_another_device_or_no_rows_of_the_part(carry, tmp_path):
    path = tmp_path / "kernels.json"
    with pytest.raises(ValueError, match="does not exist"):
        carry.carry_part(_file("H200", "b", 1.0, 1.0), path, kept="slstm")
    path.write_text(json.dumps(_file("H100", "a", 1.0, 1.0)))
    with pytest.raises(ValueError, match="one device"):
        carry.carry_part(_file("H200", "b", 1.0, 1.0), path, kept="mlstm")
    earlier = _file("H200", "a", 1.0, 1.0)
    earlier["rows"] = earlier["rows"][:2]
    path.write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match="no sLSTM rows"):
        carry.carry_part(_file("H200", "b", 1.0, 1.0), path, kept="slstm")
    with pytest.raises(ValueError, match="got 'lstm'"):
        carry.carry_part(_file("H200", "b", 1.0, 1.0), path, kept="lstm")
