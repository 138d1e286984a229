"""benchmarks/ltsf_linear_ceiling.py: its ridge-0 map is the harness's centred linear baseline, its selections are the
grid's minima on validation and on test, and the report it writes."""

import numpy as np
import pandas as pd
import pytest

from xlstm_ts.datasets.ltsf import fit_linear_lookback, linear_lookback, load_ltsf, split_windows


@pytest.fixture(scope="module")
def ceiling(load_benchmark):
    return load_benchmark("ltsf_linear_ceiling")


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(400)
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=400, freq="h"), "a": np.sin(t / 7) + 0.1 * t / 400,
                  "OT": np.cumsum(rng.normal(size=400)) / 5}).to_csv(tmp_path / "tiny.csv", index=False)
    (tmp_path / "t_8.yaml").write_text("data: tiny.csv\nsplit: ratio\nhorizon: 8\nlookback: 24\n")
    return tmp_path


def test_ridge_zero_is_the_centred_baseline(ceiling, tiny):
    data = load_ltsf(tiny / "tiny.csv", "ratio")
    past, future = split_windows(data, "train", 24, 8)
    (coef,) = ceiling.fit_maps(past, future, (0.0,))
    test_past, test_future = split_windows(data, "test", 24, 8)
    baseline = np.square(linear_lookback(test_past, fit_linear_lookback(data.values, data.borders.train_end, 24, 8,
                                                                        center=True), center=True) - test_future)
    assert ceiling.scores(test_past, test_future, [coef])[0] == pytest.approx(baseline.mean(), rel=1e-6)
    heavy, light = ceiling.scores(test_past, test_future, ceiling.fit_maps(past, future, (1e3, 0.0)))
    assert heavy != pytest.approx(light)  # the penalty changes the map


def test_selections_are_the_grid_minima_and_the_report(ceiling, tiny):
    lookbacks, ridges = (16, 24), (0.0, 0.1, 10.0)
    rows = ceiling.main(["--presets", str(tiny / "t_8.yaml"), "--data-dir", str(tiny), "--lookbacks", "16", "24",
                         "--ridges", "0", "0.1", "10", "--results-dir", str(tiny / "out")])
    data = load_ltsf(tiny / "tiny.csv", "ratio")
    grid = []
    for L in lookbacks:
        maps = ceiling.fit_maps(*split_windows(data, "train", L, 8), ridges)
        val, test = (ceiling.scores(*split_windows(data, part, L, 8), maps) for part in ("val", "test"))
        grid += [(v, t, L, r) for v, t, r in zip(val, test, ridges)]
    v, t = rows[0]["val_selected"], rows[0]["test_selected"]
    assert v["val_mse"] == pytest.approx(min(g[0] for g in grid))
    assert t["test_mse"] == pytest.approx(min(g[1] for g in grid))
    assert t["test_mse"] <= v["test_mse"]
    text = (tiny / "out" / "ltsf_linear_ceiling.md").read_text()
    assert f"| tiny | 8 | {v['lookback']}, {v['ridge']:g} | {v['val_mse']:.4f} / {v['test_mse']:.4f} |" in text
    assert (tiny / "out" / "ltsf_linear_ceiling.json").exists()
    with pytest.raises(SystemExit):
        ceiling.main(["--presets", str(tiny / "t_8.yaml"), "--ridges", "-1"])
