"""The commit a benchmark row records: git's HEAD, or the commit named by $XLSTM_TS_COMMIT for a copied tree."""

import argparse
import subprocess
from pathlib import Path

import pytest
import torch


def test_commit_id_is_head_or_the_named_commit(load_benchmark, monkeypatch):
    provenance = load_benchmark("provenance")
    monkeypatch.delenv("XLSTM_TS_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip() or "unknown"  # fmt: skip
    assert provenance.commit_id() == head
    monkeypatch.setenv("XLSTM_TS_COMMIT", "abc1234")
    assert provenance.commit_id() == "abc1234"


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda", "no-cuda"])
def test_accelerator_auto_takes_the_gpu_when_cuda_is_there(cuda, load_benchmark, monkeypatch, tmp_path):
    """--accelerator defaults to auto: the GPU when CUDA is available, else the CPU, resolved while parsing so that
    the device a row records is the one that trained; cpu and gpu stay as given; other names are refused."""
    provenance = load_benchmark("provenance")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    parser = argparse.ArgumentParser()
    provenance.add_accelerator_option(parser)
    assert parser.parse_args([]).accelerator == ("gpu" if cuda else "cpu")
    assert parser.parse_args(["--accelerator", "cpu"]).accelerator == "cpu"
    assert parser.parse_args(["--accelerator", "gpu"]).accelerator == "gpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["--accelerator", "tpu"])
    ltsf = load_benchmark("ltsf")
    assert ltsf.parse_args(["--data", "x.csv", "--split", "ratio"]).accelerator == ("gpu" if cuda else "cpu")
    sweep = load_benchmark("ltsf_sweep")
    (tmp_path / "ETT").mkdir()
    (tmp_path / "ETT" / "ETTh1.csv.gz").touch()  # the sweep checks that each preset's file is there
    sweep_args, _ = sweep.parse_args(["--presets", "etth1_96", "--data-dir", str(tmp_path)])
    assert sweep_args.accelerator == ("gpu" if cuda else "cpu")
