"""benchmarks/precision.py: mixed precision next to float32 over seeds, the noise verdict, and the recorded table."""

import json

import numpy as np
import pandas as pd
import pytest


def test_within_noise_uses_two_standard_errors(load_benchmark):
    bench = load_benchmark("precision")
    a, b = [1.0, 1.2, 1.1], [1.3, 1.5, 1.4]  # means 1.1 and 1.4, each std 0.1
    diff, bound, ok = bench.within_noise(a, b)
    assert diff == pytest.approx(0.3) and bound == pytest.approx(2 * np.sqrt(0.01 / 3 + 0.01 / 3))
    assert not ok and bench.within_noise(a, [1.05, 1.25, 1.15])[2]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        bench.within_noise([1.0], [1.0, 2.0])


def test_script_trains_each_seed_in_each_precision(tmp_path, one_thread, load_benchmark):
    bench = load_benchmark("precision")
    rng = np.random.default_rng(0)
    n = 300  # ratio split: train 210, val 30, test 60 rows
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="h"),
                  "OT": np.sin(np.arange(n) / 7.0) + 0.1 * rng.normal(size=n),
                  "walk": np.cumsum(rng.normal(size=n))}).to_csv(tmp_path / "tiny.csv", index=False)
    out = tmp_path / "results"
    rows = bench.main(["--data", str(tmp_path / "tiny.csv"), "--split", "ratio", "--horizon", "8", "--lookback", "24",
                       "--seeds", "0", "1", "--model", "tiny", "--max-steps", "4", "--batch-size", "8",
                       "--learning-rate", "0.01", "--val-check-steps", "1", "--eval-batch-size", "50",
                       "--out", str(out)])
    assert [(r["seed"], r["precision"]) for r in rows] == [(0, "32-true"), (0, "bf16-mixed"), (1, "32-true"),
                                                          (1, "bf16-mixed")]
    assert all(np.isfinite(r["best_val_loss"]) and np.isfinite(r["mse"]) for r in rows)
    assert rows[0]["best_val_loss"] != rows[1]["best_val_loss"]  # bf16 really changed the arithmetic
    assert len(json.loads((out / "precision.json").read_text())) == 4
    markdown = (out / "precision.md").read_text()
    assert "| 32-true | 2 |" in markdown and "| bf16-mixed | 2 |" in markdown and "noise" in markdown
    with pytest.raises(SystemExit):
        bench.main(["--data", str(tmp_path / "tiny.csv"), "--split", "ratio", "--precisions", "bf16-mixed"])
