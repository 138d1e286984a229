"""`benchmarks/kernels.py --only-mlstm`: the new mLSTM rows beside the earlier run's sLSTM rows, notes naming both."""

import json

import pytest


@pytest.fixture(scope="module")
def carry(load_benchmark):
    return load_benchmark("kernels_carry")


def _file(device, commit, mlstm_ms, slstm_ms):
    rows = [{"op": "mlstm", "B": 1, "NH": 4, "S": 64, "DH": 32, "kernel": "mlstm_chunkwise--triton", "fw_ms": mlstm_ms,
             "fwbw_ms": 2 * mlstm_ms},
            {"op": "slstm", "B": 16, "S": 2048, "D": 512, "NH": 4, "kernel": "slstm--triton", "fw_ms": slstm_ms,
             "fwbw_ms": 3 * slstm_ms}]  # fmt: skip
    anchors = [{"cfg": "ts_small", "kernel": "chunkwise--triton_limit_chunk", "fw_ms": 9.0},
               {"kernel": "slstm_cuda", "B": 16, "fw_ms": 25.0}, {"kernel": "sdpa_causal", "fw_ms": 0.1}]  # fmt: skip
    meta = {"device": device, "commit": commit, "anchors": f"ran at {commit}", "gpu_tests": f"{commit}: 9 passed"}
    return {"meta": meta, "rows": rows, "anchor_rows": anchors}


def test_keeps_the_earlier_slstm_rows_and_takes_the_new_mlstm_rows(carry, tmp_path):
    earlier = tmp_path / "kernels.json"
    earlier.write_text(json.dumps(_file("H200", "aaa", 1.0, 7.0)))
    new = _file("H200", "bbb", 0.5, 99.0)
    new["rows"] = [r for r in new["rows"] if r["op"] == "mlstm"]  # an --only-mlstm run times no sLSTM
    new["anchor_rows"] = [a for a in new["anchor_rows"] if a["kernel"] != "slstm_cuda"]
    merged = carry.carry_slstm(new, earlier)
    by_op = {r["op"]: r["fw_ms"] for r in merged["rows"]}
    assert by_op == {"mlstm": 0.5, "slstm": 7.0} and len(merged["rows"]) == 2
    assert sorted(a["kernel"] for a in merged["anchor_rows"]) == [
        "chunkwise--triton_limit_chunk", "sdpa_causal", "slstm_cuda"]  # fmt: skip
    assert merged["meta"]["slstm_from"] == "aaa" and "bbb" in merged["meta"]["anchors"]
    assert "ran at aaa" in merged["meta"]["anchors"]
    assert "for the sLSTM rows: aaa: 9 passed" in merged["meta"]["gpu_tests"]


def test_a_second_carry_names_the_slstm_run_once(carry, tmp_path):
    """Carrying from a file that itself kept its sLSTM rows names the run they came from, without nesting notes."""
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(_file("H200", "aaa", 1.0, 7.0)))
    only_mlstm = lambda commit: {**_file("H200", commit, 0.5, 0.0), "rows": _file("H200", commit, 0.5, 0.0)["rows"][:1]}
    path.write_text(json.dumps(carry.carry_slstm(only_mlstm("bbb"), path)))
    merged = carry.carry_slstm(only_mlstm("ccc"), path)
    meta = merged["meta"]
    assert meta["slstm_from"] == "aaa" and "bbb" not in meta["anchors"]
    assert meta["anchors"].endswith("are kept from the run at aaa: ran at aaa")
    assert meta["gpu_tests"] == "ccc: 9 passed; for the sLSTM rows: aaa: 9 passed"
    assert [r["fw_ms"] for r in merged["rows"] if r["op"] == "slstm"] == [7.0]


def test_refuses_a_missing_file_another_device_or_no_slstm_rows(carry, tmp_path):
    path = tmp_path / "kernels.json"
    with pytest.raises(ValueError, match="does not exist"):
        carry.carry_slstm(_file("H200", "b", 1.0, 1.0), path)
    path.write_text(json.dumps(_file("H100", "a", 1.0, 1.0)))
    with pytest.raises(ValueError, match="one device"):
        carry.carry_slstm(_file("H200", "b", 1.0, 1.0), path)
    earlier = _file("H200", "a", 1.0, 1.0)
    earlier["rows"] = earlier["rows"][:1]
    path.write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match="no sLSTM rows"):
        carry.carry_slstm(_file("H200", "b", 1.0, 1.0), path)
