"""The ETT benchmark protocol: split rows, train-only scaling, every test window."""

import os
from pathlib import Path

import numpy as np
import pytest

from xlstm_ts.datasets import read_ett, sliding_windows

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("XLSTM_TS_DATA", ROOT.parent / "shared" / "datasets"))
pytestmark = pytest.mark.skipif(not (DATA_DIR / "ETT").is_dir(), reason="benchmark data directory not available")


def test_scaler_uses_train_rows_only_and_counts_every_test_window(load_benchmark):
    ett = load_benchmark("ett")
    values, dates, cols = ett.scaled_values("ETTh1", DATA_DIR)
    raw = read_ett("ETTh1", DATA_DIR)[cols].to_numpy(np.float64)
    train_end, val_end, test_end = ett.split_rows("ETTh1")
    assert (train_end, val_end, test_end) == (8640, 11520, 14400)
    np.testing.assert_allclose(values[:train_end].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(values[:train_end].std(0), 1.0, atol=1e-5)
    expected = (raw[5000] - raw[:train_end].mean(0)) / raw[:train_end].std(0)
    np.testing.assert_allclose(values[5000], expected, rtol=1e-5, atol=1e-5)
    past, future = sliding_windows(values, 336, 96, val_end, test_end)
    assert len(past) == (test_end - val_end - 96 + 1) * len(cols)
    np.testing.assert_array_equal(future[-1], values[test_end - 96:test_end, -1])  # the last test window is kept
    assert ett.split_rows("ETTm1") == (34560, 46080, 57600)


def test_metrics_do_not_depend_on_prediction_batch_size():
    from xlstm_ts import XLSTMForecaster
    from xlstm_ts.datasets import make_synthetic_panel

    f = XLSTMForecaster(prediction_length=4, context_length=16, model="tiny", max_steps=2, batch_size=8)
    f.fit(make_synthetic_panel(n_series=2, length=60))
    context = np.random.default_rng(0).normal(size=(37, 16)).astype(np.float32)
    a = f._predict_series(list(context), batch_size=5)["mean"]
    b = f._predict_series(list(context), batch_size=1024)["mean"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
