"""benchmarks/ltsf_drop_last.py: what a drop_last test loader leaves out, and the report it writes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlstm_ts.datasets.ltsf import load_ltsf, split_windows


@pytest.fixture(scope="module")
def drop(load_benchmark):
    return load_benchmark("ltsf_drop_last")


def test_window_errors_and_the_windows_a_drop_last_loader_keeps(drop):
    rng = np.random.default_rng(0)
    C, F, n = 3, 4, 10
    pred, future = rng.normal(size=(n * C, F)), rng.normal(size=(n * C, F))
    per_window = drop.window_mse(pred, future, C)
    assert per_window.shape == (n,)
    for w in (0, 7):  # window w is rows w * C .. w * C + C - 1
        assert per_window[w] == pytest.approx(np.square(pred[w * C:(w + 1) * C] - future[w * C:(w + 1) * C]).mean())
    assert per_window.mean() == pytest.approx(np.square(pred - future).mean())
    assert drop.kept_mse(per_window, 4) == (pytest.approx(per_window[:8].mean()), 2)
    assert drop.kept_mse(per_window, 5) == (pytest.approx(per_window.mean()), 0)
    with pytest.raises(ValueError, match="keeps none of the 10 windows"):
        drop.kept_mse(per_window, 11)


def test_report_on_a_run_preset(drop, tmp_path):
    rng = np.random.default_rng(1)
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=300, freq="h"), "a": np.sin(np.arange(300) / 7),
                  "OT": np.cumsum(rng.normal(size=300))}).to_csv(tmp_path / "tiny.csv", index=False)
    preset = tmp_path / "t_8.yaml"
    preset.write_text("data: tiny.csv\nsplit: ratio\nhorizon: 8\nlookback: 24\n")
    rows = drop.main(["--presets", str(preset), "--data-dir", str(tmp_path), "--batch-sizes", "16", "32",
                      "--results-dir", str(tmp_path / "out")])
    past, _ = split_windows(load_ltsf(tmp_path / "tiny.csv", "ratio"), "test", 24, 8)
    n = len(past) // 2
    assert rows[0]["n_test_windows"] == n and rows[0]["dropped_16"] == n % 16 and rows[0]["dropped_32"] == n % 32
    text = (tmp_path / "out" / "ltsf_drop_last.md").read_text()
    assert f"| tiny | 8 | 24 | {n} | {rows[0]['mse_all']:.4f} |" in text
    assert Path(tmp_path / "out" / "ltsf_drop_last.json").exists()
