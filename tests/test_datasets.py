"""Long-frame validation, windows, synthetic data and file readers."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlstm_ts.datasets import (
    WindowSampler,
    context_windows,
    future_times,
    make_synthetic_panel,
    read_ett,
    read_m4,
    sliding_windows,
    validate_long_frame,
    wide_to_long,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DATA_DIR = Path(os.environ.get("XLSTM_TS_DATA", SHARED))
needs_data = pytest.mark.skipif(not (DATA_DIR / "ETT").is_dir(), reason="benchmark data directory not available")


def _frame():
    return pd.DataFrame({
        "unique_id": ["a"] * 4 + ["b"] * 3,
        "ds": list(pd.date_range("2024-01-01", periods=4, freq="D")) + list(pd.date_range("2024-02-01", periods=3,
                                                                                           freq="D")),
        "y": np.arange(7, dtype=float),
    })


def test_validate_sorts_and_keeps_input_unchanged():
    df = _frame().sample(frac=1.0, random_state=1)
    before = df.copy()
    panel = validate_long_frame(df)
    pd.testing.assert_frame_equal(df, before)
    assert panel.ids == list(pd.unique(df.unique_id))  # order of first appearance
    a = panel.ids.index("a")
    np.testing.assert_array_equal(panel.values[a], [0, 1, 2, 3])  # time-sorted inside each series
    assert panel.freq.freqstr == "D"
    assert panel.ends[1 - a] == pd.Timestamp("2024-02-03")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.drop(columns="y"), "missing column"),
        (lambda d: d.iloc[:0], "empty"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate"),
        (lambda d: d.assign(y=["x"] * len(d)), "must be numeric"),
        (lambda d: d.drop(index=1), "irregular"),
    ],
    ids=["missing-col", "empty", "duplicate", "non-numeric", "irregular"],
)
def test_validate_errors(mutate, match):
    with pytest.raises(ValueError, match=match):
        validate_long_frame(mutate(_frame()))


def test_validate_mixed_frequency():
    df = _frame()
    df.loc[df.unique_id == "b", "ds"] = pd.date_range("2024-02-01", periods=3, freq="h")
    with pytest.raises(ValueError, match="mixed frequencies"):
        validate_long_frame(df)


def test_validate_custom_columns_and_integer_time():
    df = pd.DataFrame({"item": ["x"] * 5, "step": np.arange(10, 20, 2), "sales": np.ones(5)})
    panel = validate_long_frame(df, id_col="item", time_col="step", target_col="sales")
    assert panel.freq == 2
    np.testing.assert_array_equal(future_times(panel.ends[0], panel.freq, 3), [20, 22, 24])


def test_future_times_continue_frequency():
    out = future_times(pd.Timestamp("2024-01-01 23:00"), pd.tseries.frequencies.to_offset("h"), 3)
    assert list(pd.DatetimeIndex(out)) == list(pd.date_range("2024-01-02 00:00", periods=3, freq="h"))


def test_context_windows_left_pad_short_series_with_mask():
    batch = context_windows([np.array([1.0, 2.0], np.float32), np.arange(6, dtype=np.float32)], 4)
    np.testing.assert_array_equal(batch["past_observed"][0].numpy(), [0, 0, 1, 1])
    np.testing.assert_array_equal(batch["past_target"][0].numpy(), [0, 0, 1, 2])
    np.testing.assert_array_equal(batch["past_target"][1].numpy(), [2, 3, 4, 5])


def test_window_sampler_windows_are_contiguous_and_deterministic():
    series = [np.arange(50, dtype=np.float32), 1000 + np.arange(30, dtype=np.float32)]
    sampler = WindowSampler(series, context_length=8, prediction_length=4, batch_size=64, seed=3)
    assert sampler.num_windows == (50 - 4) + (30 - 4)
    a = sampler.batch(np.random.default_rng(0))
    b = sampler.batch(np.random.default_rng(0))
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    for past, obs, fut in zip(a["past_target"].numpy(), a["past_observed"].numpy(), a["future_target"].numpy()):
        last = past[obs > 0][-1]
        np.testing.assert_array_equal(fut, last + np.arange(1, 5))  # target continues the context
    assert (a["past_observed"].numpy() == 0).any()  # early cut points are padded and masked


def test_window_sampler_rejects_too_short_series():
    with pytest.raises(ValueError, match="long enough"):
        WindowSampler([np.arange(3, dtype=np.float32)], 8, 4, 2)


def test_sliding_windows_count_and_content():
    values = np.arange(100, dtype=np.float32).reshape(50, 2)
    past, future = sliding_windows(values, context_length=5, prediction_length=3, start=20, stop=30)
    assert past.shape == ((30 - 20 - 3 + 1) * 2, 5)
    np.testing.assert_array_equal(past[0], values[15:20, 0])
    np.testing.assert_array_equal(future[1], values[20:23, 1])
    np.testing.assert_array_equal(future[-1], values[27:30, 1])


def test_synthetic_panel_is_deterministic_and_seasonal():
    a = make_synthetic_panel(n_series=3, length=400, seed=5)
    b = make_synthetic_panel(n_series=3, length=400, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(make_synthetic_panel(n_series=3, length=400, seed=6))
    y = a[a.unique_id == "series_0"].y.to_numpy()
    lag24 = np.corrcoef(y[24:], y[:-24])[0, 1]
    lag12 = np.corrcoef(y[12:], y[:-12])[0, 1]
    assert lag24 > lag12  # daily cycle present
    assert validate_long_frame(a).freq.freqstr == "h"


@needs_data
def test_read_ett_and_long():
    df = read_ett("ETTh1", DATA_DIR)
    assert df.shape == (17420, 8) and df.columns[-1] == "OT"
    long = wide_to_long(df.iloc[:10], columns=["OT", "HUFL"])
    assert len(long) == 20 and set(long.unique_id) == {"OT", "HUFL"}


@needs_data
def test_read_m4_hourly_continues_train():
    train, test = read_m4("Hourly", DATA_DIR)
    assert train.unique_id.nunique() == 414 and len(train) == 353500
    assert (test.groupby("unique_id").size() == 48).all()
    h1_train_end = train[train.unique_id == "H1"].ds.max()
    assert test[test.unique_id == "H1"].ds.min() == h1_train_end + pd.Timedelta(hours=1)


def test_data_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("XLSTM_TS_DATA", raising=False)
    with pytest.raises(ValueError, match="XLSTM_TS_DATA"):
        read_ett("ETTh1")
    monkeypatch.setenv("XLSTM_TS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ETTh1.csv"):
        read_ett("ETTh1")


def test_tail_windows_and_holdout_do_not_overlap():
    from xlstm_ts.datasets.windows import tail_windows

    series = [np.arange(40, dtype=np.float32)]
    val = tail_windows(series, context_length=5, prediction_length=3, tail=10)
    targets = val["future_target"].numpy()
    assert targets.min() == 30 and targets.max() == 39 and len(targets) == 10 - 3 + 1
    sampler = WindowSampler(series, 5, 3, batch_size=256, seed=0, holdout=10)
    assert sampler.batch(np.random.default_rng(0))["future_target"].numpy().max() <= 29


@pytest.mark.parametrize("variates", [None, 3])
def test_window_sampler_batches_equal_direct_slices(variates):
    """Every window of a batch is the slice of its series at its cut point (NaN-padded before the start)."""
    from xlstm_ts.datasets.windows import Covariates

    rng = np.random.default_rng(1)
    shape = lambda n: (n,) if variates is None else (n, variates)  # noqa: E731
    series = [rng.normal(size=shape(n)).astype(np.float32) for n in (40, 7, 25)]
    series[0][5] = np.nan  # a missing value inside a series
    dynamic = [rng.normal(size=(len(v), 2)).astype(np.float32) for v in series]
    L, F = 9, 4
    covariates = Covariates(dynamic=dynamic, n_future=1) if variates is None else None
    sampler = WindowSampler(series, L, F, batch_size=5, min_past=2, covariates=covariates)
    flat = np.arange(sampler.num_windows)
    batch = sampler.windows(flat)
    k = 0
    for s, v in enumerate(series):
        for t in range(2, len(v) - F + 1):  # cut points with min_past = 2 steps and a full target
            padded = np.concatenate([np.full((L, *v.shape[1:]), np.nan, np.float32), v])
            past, future = padded[t:t + L], padded[t + L:t + L + F]
            if variates is not None:
                past, future = past.T, future.T  # (C, L), (C, F)
            np.testing.assert_array_equal(batch["past_target"][k].numpy(), np.nan_to_num(past))
            np.testing.assert_array_equal(batch["past_observed"][k].numpy(), ~np.isnan(past))
            np.testing.assert_array_equal(batch["future_target"][k].numpy(), np.nan_to_num(future))
            if covariates is not None:
                cov = np.concatenate([np.full((L, 2), np.nan, np.float32), dynamic[s]])[t:t + L + F]
                np.testing.assert_array_equal(batch["past_covariates"][k].numpy(), np.nan_to_num(cov[:L]).T)
                np.testing.assert_array_equal(batch["future_covariates"][k].numpy(), cov[L:, 1:].T)
            k += 1
    assert k == sampler.num_windows == len(flat)


_NO_CUDA = not __import__("torch").cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA, reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variates", [None, 3])
def test_window_sampler_on_a_device_gives_the_same_batches(variates, device):
    """`WindowSampler.to(device)` gathers the windows there: the same values, dtypes and shapes as the CPU path,
    NaN padding and missing values included; samplers with covariates keep the CPU path."""
    import torch

    rng = np.random.default_rng(2)
    shape = lambda n: (n,) if variates is None else (n, variates)  # noqa: E731
    series = [rng.normal(size=shape(n)).astype(np.float32) for n in (40, 7, 25)]
    series[0][5] = np.nan
    host = WindowSampler(series, 9, 4, batch_size=6, min_past=2)
    on_device = WindowSampler(series, 9, 4, batch_size=6, min_past=2).to(device)
    for a, b in [(host.windows(np.arange(host.num_windows)), on_device.windows(np.arange(host.num_windows))),
                 (next(iter(host)), next(iter(on_device)))]:  # every window, and the same seeded stream
        assert a.keys() == b.keys()
        for key in a:
            assert b[key].device.type == device and b[key].dtype == a[key].dtype and b[key].is_contiguous()
            assert torch.equal(b[key].cpu(), a[key]), key
    assert bool(on_device.windows(np.arange(3))["past_observed"].sum() < 3 * 9 * (variates or 1))  # padding seen
    if variates is None:  # covariates: the CPU path
        from xlstm_ts.datasets.windows import Covariates

        dynamic = [rng.normal(size=(len(v), 2)).astype(np.float32) for v in series]
        with_cov = WindowSampler(series, 9, 4, batch_size=6, covariates=Covariates(dynamic=dynamic)).to(device)
        assert with_cov.windows(np.arange(4))["past_target"].device.type == "cpu"
