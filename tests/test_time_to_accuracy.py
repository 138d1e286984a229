"""The time-to-accuracy benchmark trains, times and scores each model on a tiny CSV and records its table (no speed is
asserted; neuralforecast rows run only where neuralforecast and xlstm are installed)."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

HAS_NF = all(importlib.util.find_spec(m) is not None for m in ("neuralforecast", "xlstm"))


def _write_csv(path, n_rows=300):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n_rows, freq="h"),
                          "OT": np.sin(np.arange(n_rows) / 5.0) + 0.1 * rng.normal(size=n_rows),
                          "walk": np.cumsum(rng.normal(size=n_rows))})  # fmt: skip
    frame.to_csv(path, index=False)


def _argv(tmp_path, *models):
    _write_csv(tmp_path / "tiny.csv")  # ratio split: train 210, val 30, test 60 rows
    return ["--models", *models, "--data", str(tmp_path / "tiny.csv"), "--split", "ratio", "--horizon", "8",
            "--lookback", "24", "--model", "tiny", "--max-steps", "4", "--batch-size", "4", "--val-check-steps", "2",
            "--patience", "5", "--eval-batch-size", "50", "--out", str(tmp_path / "out")]  # fmt: skip


def test_ours_row_timings_scores_and_table(tmp_path, one_thread, load_benchmark):
    bench = load_benchmark("time_to_accuracy")
    argv = _argv(tmp_path, "xlstm_ts")
    (row,) = bench.main(argv)
    label = "tiny (batch_size 4, max_steps 4, val_check_steps 2)"  # the model preset and the settings changed
    assert row["model"] == "xlstm_ts" and row["preset"] == label and row["seed"] == 0
    assert row["steps"] == 4 and row["best_step"] in (0, 2, 4)  # validations at steps 2 and 4 (0: the initial weights)
    assert 0 <= row["seconds_to_best"] <= row["fit_seconds"]
    assert np.isfinite(row["mse"]) and np.isfinite(row["mae"]) and row["params"] > 0
    bench.main(argv)  # a rerun replaces the row of the same device, preset, budget, seed and model
    saved = json.loads((tmp_path / "out" / "time_to_accuracy.json").read_text())
    assert len(saved) == 1
    table = (tmp_path / "out" / "time_to_accuracy.md").read_text()
    assert f"| {label} | 0 | xlstm_ts |" in table and "| 4 / 2 / 5 |" in table


@pytest.mark.skipif(not HAS_NF, reason="neuralforecast and xlstm are optional benchmark dependencies")
def test_neuralforecast_rows_on_the_same_windows(tmp_path, one_thread, load_benchmark, monkeypatch):
    from neuralforecast import models

    bench = load_benchmark("time_to_accuracy")
    built = []

    class Recorded(models.PatchTST):  # the model as the benchmark builds it, its arguments kept
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(models, "PatchTST", Recorded)
    rows = bench.main(_argv(tmp_path, "nf_patchtst"))
    (row,) = rows
    assert row["model"] == "nf_patchtst" and row["steps"] == 4 and row["best_step"] in (2, 4)
    assert 0 <= row["seconds_to_best"] <= row["fit_seconds"] and np.isfinite(row["mse"])
    assert built and built[0]["inference_windows_batch_size"] == 50  # --eval-batch-size bounds its inference passes


def test_gpu_utilisation_is_none_without_a_gpu(load_benchmark):
    bench = load_benchmark("time_to_accuracy")
    with bench.GPUUtilisation("cpu") as util:
        pass
    assert util.mean is None and util.samples == []


def test_gpu_utilisation_averages_the_samples(load_benchmark, monkeypatch):
    bench = load_benchmark("time_to_accuracy")
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    values = iter([40.0, 60.0] + [50.0] * 1000)
    monkeypatch.setattr(bench.torch.cuda, "utilization", lambda: next(values))
    with bench.GPUUtilisation("gpu") as util:
        while len(util.samples) < 2:
            bench.time.sleep(0.05)
    assert util.samples[:2] == [40.0, 60.0] and util.mean == pytest.approx(np.mean(util.samples))


def test_step_clock_counts_the_initial_weights_from_the_fit_start(load_benchmark):
    """Step 0 (the weights before any step, which validation may keep) is timed at the start of the fit, each
    optimizer step at its end; before, a best at step 0 was reported as reached at the end of the whole fit."""
    import lightning

    bench = load_benchmark("time_to_accuracy")
    clock = bench.step_clock(lightning.Callback, start=bench.time.perf_counter())
    trainer = type("Trainer", (), {"global_step": 0})()
    clock.on_fit_start(trainer, None)
    for step in (1, 2):
        trainer.global_step = step
        clock.on_train_batch_end(trainer, None, None, None, step - 1)
    seconds = clock.seconds
    assert sorted(seconds) == [0, 1, 2] and 0 <= seconds[0] <= seconds[1] <= seconds[2]
