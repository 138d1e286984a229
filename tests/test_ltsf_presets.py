"""Run presets of the long-horizon benchmark: every cell has one, they are strict and valid, command-line flags win
over them, and the sweep runner records every run (baselines once per preset) and reports failed runs."""

import dataclasses
import fnmatch
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlstm_ts.config import resolve_config
from xlstm_ts.datasets.ltsf import load_ltsf, n_windows
from xlstm_ts.datasets.ltsf_presets import (
    LTSFRunConfig,
    load_run_config,
    resolve_data_path,
    run_config_from_dict,
    run_preset_names,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("XLSTM_TS_DATA", ROOT.parent / "shared" / "datasets"))
MAX_LOOKBACK = 768
# run preset -> (file, split, lookback): ETT lookbacks of the xLSTM-Mixer scripts, ILI 104 as the protocol sets it
EXPECTED = {
    **{f"etth1_{h}": ("ETT/ETTh1.csv.gz", "ett-hourly", L) for h, L in zip((96, 192, 336, 720), (336, 512, 512, 768))},
    **{f"etth2_{h}": ("ETT/ETTh2.csv.gz", "ett-hourly", L) for h, L in zip((96, 192, 336, 720), (768, 512, 512, 512))},
    **{f"ettm1_{h}": ("ETT/ETTm1.csv.gz", "ett-minute", 768) for h in (96, 192, 336, 720)},
    **{f"exchange_rate_{h}": ("exchange_rate/exchange_rate.csv", "ratio", 96) for h in (96, 192, 336, 720)},
    **{f"ili_{h}": ("illness/national_illness.csv", "ratio", 104) for h in (24, 36, 48, 60)},
}


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ltsf")


@pytest.fixture(scope="module")
def sweep(load_benchmark):
    return load_benchmark("ltsf_sweep")


def test_every_benchmark_cell_has_a_valid_run_preset():
    assert set(run_preset_names()) == set(EXPECTED)
    for name, (data, split, lookback) in EXPECTED.items():
        config = load_run_config(name)
        assert (config.data, config.split, config.lookback) == (data, split, lookback), name
        assert config.horizon == int(name.rsplit("_", 1)[1]) and config.lookback <= MAX_LOOKBACK
        # exchange rates move like random walks: their presets drop the per-window scaling (see the model preset)
        # ETT data: per-window centring (see the model preset), but ETTh1 at H = 96 (per-window mean/std)
        model = "ltsf_mixing_global" if name.startswith("exchange_rate") else "ltsf_center" if name.startswith(
            "ett") and name != "etth1_96" else "ltsf_mixing"
        assert (config.model, config.batch_size, config.val_check_steps) == (model, 32, 150)
        assert resolve_config(config.model).mode == "variate_mixing"
        # the model preset with the run's model fields builds (a bad field or value fails here)
        dataclasses.replace(resolve_config(config.model), **(config.model_settings or {}))
    assert resolve_config("ltsf_mixing_global") == dataclasses.replace(resolve_config("ltsf_mixing"), scaling="none")
    center = resolve_config("ltsf_center")
    assert center.scaling == "center" and len(center.linear_skip_ridge) > 1
    assert center == dataclasses.replace(resolve_config("ltsf_mixing"), scaling="center",
                                         linear_skip_ridge=center.linear_skip_ridge)


def test_every_run_preset_reproduces_a_recorded_configuration(bench, tmp_path):
    """`ltsf.py --preset NAME` runs a configuration that ltsf.csv holds with at least 3 seeds: its label (settings
    that differ from a preset's defaults, model fields, head) and lookback, so one command repeats a recorded row."""
    results = pd.read_csv(ROOT / "benchmarks" / "results" / "ltsf.csv", dtype={"preset": str})
    for name in EXPECTED:
        config = load_run_config(name)
        (tmp_path / config.data).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / config.data).touch()
        args = bench.parse_args(["--preset", name, "--data-dir", str(tmp_path)])
        rows = results[(results["preset"] == args.label) & (results["lookback"] == config.lookback)
                       & (results["horizon"] == config.horizon)]
        assert rows["seed"].nunique() >= 3, f"{name}: ltsf.csv holds {len(rows)} rows of {args.label!r}"


def test_run_presets_ship_with_the_package():
    tomllib = pytest.importorskip("tomllib")
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(fnmatch.fnmatch("ltsf/etth1_96.yaml", p) for p in package_data["xlstm_ts.configs"])


def test_run_presets_name_files_that_hold_every_window():
    if not DATA_DIR.is_dir():
        pytest.skip(f"{DATA_DIR} not available (set XLSTM_TS_DATA)")
    loaded = {}
    for name in EXPECTED:
        config = load_run_config(name)
        path = resolve_data_path(config.data, DATA_DIR)
        data = loaded.setdefault(path, load_ltsf(path, config.split))
        for part in ("train", "val", "test"):  # raises if a part cannot hold one window of this lookback and horizon
            assert n_windows(data.borders, part, config.lookback, config.horizon) >= 1


def test_malformed_run_presets_are_rejected(tmp_path):
    good = {"data": "a.csv", "split": "ratio", "horizon": 8, "lookback": 24}
    assert run_config_from_dict(good) == LTSFRunConfig(**good)
    with pytest.raises(ValueError, match="Unknown key 'lookbak'.*Did you mean 'lookback'"):
        run_config_from_dict({**good, "lookbak": 96})
    with pytest.raises(ValueError, match=r"lacks the required keys \['horizon'\]"):
        run_config_from_dict({k: v for k, v in good.items() if k != "horizon"})
    with pytest.raises(ValueError, match="split must be one of"):
        run_config_from_dict({**good, "split": "ett"})
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        run_config_from_dict({**good, "horizon": 0})
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0, got -0.1"):
        run_config_from_dict({**good, "weight_decay": -0.1})
    with pytest.raises(ValueError, match="head must be one of.*got 'median'"):
        run_config_from_dict({**good, "head": "median"})
    assert run_config_from_dict({**good, "model_settings": {"dropout": 0.6}}).model_settings == {"dropout": 0.6}
    with pytest.raises(ValueError, match="'dropot' is not a field of ModelConfig. Did you mean 'dropout'"):
        run_config_from_dict({**good, "model_settings": {"dropot": 0.6}})
    with pytest.raises(ValueError, match="the multivariate mode comes from the model preset"):
        run_config_from_dict({**good, "model_settings": {"mode": "channel_independent"}})
    for bad in ({}, ["dropout", 0.6], "dropout=0.6"):
        with pytest.raises(ValueError, match="non-empty mapping of model fields"):
            run_config_from_dict({**good, "model_settings": bad})
    (tmp_path / "p.yaml").write_text("data: a.csv\nsplit: ratio\nhorizon: 8\nlookback: 24\nlearning_rate: 1e-4\n")
    with pytest.raises(ValueError, match="write e.g. 1.0e-4"):  # YAML reads 1e-4 as a string
        load_run_config(tmp_path / "p.yaml")
    with pytest.raises(ValueError, match="Did you mean 'etth1_96'"):
        load_run_config("etth1_69")


def test_command_line_flags_override_the_run_preset(bench, tmp_path, monkeypatch, capsys):
    (tmp_path / "ETT").mkdir()
    (tmp_path / "ETT" / "ETTh1.csv.gz").touch()
    args = bench.parse_args(["--preset", "etth1_96", "--data-dir", str(tmp_path)])
    assert args.data == str(tmp_path / "ETT" / "ETTh1.csv.gz") and args.split == "ett-hourly"
    assert (args.horizon, args.lookback, args.batch_size, args.val_check_steps) == (96, 336, 32, 150)
    recipe = "(learning_rate 0.0003, max_steps 8000, patience 10, ema_decay 0.999) (dropout 0.6)"
    assert (args.mode, args.label) == ("variate_mixing", f"etth1_96/ltsf_mixing {recipe}")
    assert args.config.dropout == 0.6 and args.model_settings == [("dropout", 0.6)]  # the preset's model field
    args = bench.parse_args(["--preset", "etth1_96", "--data-dir", str(tmp_path), "--lookback", "512",
                             "--max-steps", "10", "--model", "tiny", "--data", "other.csv", "--model-set",
                             "dropout=0.2", "embed_dim=8"])
    assert (args.lookback, args.max_steps, args.horizon, args.data) == (512, 10, 96, "other.csv")
    # the mode of the model preset; the changed step budget and model fields are named in the label
    assert (args.mode, args.label) == ("channel_independent", "etth1_96/tiny (learning_rate 0.0003, max_steps 10, "
                                       "patience 10, ema_decay 0.999) (dropout 0.2, embed_dim 8)")
    assert (args.config.dropout, args.config.embed_dim) == (0.2, 8)  # a flag changes the preset's field in place
    # the same settings give the same label, whether the preset or a flag set them
    same = bench.parse_args(["--preset", "etth1_96", "--data-dir", str(tmp_path), "--max-steps", "8000",
                             "--batch-size", "64", "--learning-rate", "3e-4", "--patience", "10"])
    assert same.label == f"etth1_96/ltsf_mixing (batch_size 64, {recipe[1:]}"
    plain = tmp_path / "p_96.yaml"
    plain.write_text("data: ETT/ETTh1.csv.gz\nsplit: ett-hourly\nhorizon: 96\nlookback: 336\nmodel: ltsf_mixing\n")
    flags = ["--learning-rate", "3e-4", "--max-steps", "8000", "--patience", "10", "--ema-decay", "0.999",
             "--model-set", "dropout=0.6"]
    assert bench.parse_args(["--preset", str(plain), "--data-dir", str(tmp_path), *flags]).label == \
        f"p_96/ltsf_mixing {recipe}"
    assert bench.parse_args(["--data", "x.csv", "--split", "ratio", "--val-check-steps", "50"]).label == \
        "ltsf (val_check_steps 50)"  # without a preset, against the defaults
    monkeypatch.setenv("XLSTM_TS_DATA", str(tmp_path))
    assert bench.parse_args(["--preset", "etth1_96"]).data == str(tmp_path / "ETT" / "ETTh1.csv.gz")

    monkeypatch.delenv("XLSTM_TS_DATA")
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "etth1_96"])
    assert "pass --data-dir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "etth2_96", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "ETTh2.csv.gz" in err and "does not exist" in err
    with pytest.raises(SystemExit):
        bench.parse_args(["--horizon", "96"])
    assert "--data and --split are required without --preset" in capsys.readouterr().err
    args = bench.parse_args(["--data", "x.csv", "--split", "ratio"])  # no preset: the defaults as before
    assert (args.lookback, args.batch_size, args.model, args.label, args.val_check_steps) == (336, 128, "ltsf",
                                                                                              "ltsf", 200)


T = "(batch_size 8, max_steps 3, val_check_steps 2)"  # labelled settings of the tiny presets (not a preset's defaults)


def _tiny_presets(folder: Path) -> list[str]:
    """A 300-row CSV (ratio split: train 210, val 30, test 60 rows) and two run presets on it."""
    rng = np.random.default_rng(0)
    pd.DataFrame({"date": pd.date_range("2020-01-01", periods=300, freq="h"), "a": np.sin(np.arange(300) / 7),
                  "OT": np.cumsum(rng.normal(size=300))}).to_csv(folder / "tiny.csv", index=False)
    paths = []
    for name, horizon, lookback in [("a_8", 8, 24), ("b_4", 4, 16)]:
        paths.append(str(folder / f"{name}.yaml"))
        Path(paths[-1]).write_text(f"data: tiny.csv\nsplit: ratio\nhorizon: {horizon}\nlookback: {lookback}\n"
                                   "model: tiny\nbatch_size: 8\nmax_steps: 3\nval_check_steps: 2\n")
    return paths


def test_sweep_records_every_run_and_the_baselines_once_per_preset(sweep, bench, tmp_path, capsys):
    presets, out = _tiny_presets(tmp_path), tmp_path / "results"
    earlier = dict(dataset="ETTh1", horizon=96, lookback=512, mode="variate_mixing", seed=0, mse=0.4, mae=0.4,
                   n_test_windows=2785, epochs=1.0, train_seconds=1.0, device="cpu", commit="abc", preset="x/y")
    bench.record([earlier], out)
    argv = ["--presets", *presets, "--seeds", "0", "1", "--jobs", "2", "--accelerator", "cpu",
            "--data-dir", str(tmp_path), "--results-dir", str(out)]
    assert sweep.main(argv) == 0
    table = pd.read_csv(out / "ltsf.csv")
    assert table.iloc[0]["preset"] == "x/y" and len(table) == 1 + 2 * 2 + 2 * 3  # earlier row kept, then appended
    model = table[table["mode"] == "channel_independent"]
    assert sorted(zip(model["preset"], model["seed"])) == [(f"a_8/tiny {T}", 0), (f"a_8/tiny {T}", 1),
                                                            (f"b_4/tiny {T}", 0), (f"b_4/tiny {T}", 1)]
    baselines = table[table["mode"].str.startswith("baseline:")]
    assert baselines.groupby(["horizon", "lookback", "mode"]).size().to_dict() == {
        (h, lb, f"baseline:{name}"): 1 for h, lb in ((4, 16), (8, 24)) for name in ("linear", "linear_centred",
                                                                                   "repeat_last")}
    threads = max(1, sweep.available_cores() // 2)  # OMP_NUM_THREADS = cores // jobs
    assert model["device"].str.contains(f"{threads} threads").all()
    markdown = (out / "ltsf.md").read_text()
    assert f"| tiny | 8 | channel_independent | 24 | a_8/tiny {T} | 2 |" in markdown
    assert "| tiny | 4 | baseline:linear | 16 | – | – |" in markdown
    printed = capsys.readouterr().out
    assert "4/4 runs succeeded; total wall time" in printed and "b_4" in printed


FAKE_HARNESS = """import csv, sys
from pathlib import Path
preset, seed, results, baselines = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
if "b_4" in preset:
    sys.exit("boom: the model diverged")
results.mkdir(parents=True)
with open(results / "ltsf.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    row = dict(dataset="tiny", horizon=8, lookback=24, n_test_windows=53, device="cpu", commit="abc", mse=0.2, mae=0.3)
    writer.writerow({**row, "mode": "channel_independent", "seed": seed, "epochs": 1.0, "train_seconds": 2.0,
                     "preset": "a_8/tiny"})
    if baselines:
        writer.writerow({**row, "mode": "baseline:linear", "seed": "", "epochs": "", "train_seconds": 0.0,
                         "preset": ""})
"""


def test_sweep_reports_failed_runs_and_records_the_others(sweep, bench, tmp_path, monkeypatch, capsys):
    presets, out = _tiny_presets(tmp_path), tmp_path / "results"
    script = tmp_path / "fake_harness.py"
    script.write_text(f"COLUMNS = {bench.COLUMNS!r}\n" + FAKE_HARNESS)
    monkeypatch.setattr(sweep, "command", lambda args, run, extra: [
        sys.executable, str(script), run.preset, str(run.seed), str(run.folder / "results"), str(int(run.baselines))])
    argv = ["--presets", *presets, "--seeds", "0", "1", "--jobs", "2", "--data-dir", str(tmp_path),
            "--results-dir", str(out)]
    assert sweep.main(argv) == 1
    captured = capsys.readouterr()
    assert "b_4 seed 0 failed (exit code 1)" in captured.err and "boom: the model diverged" in captured.err
    assert "2/4 runs succeeded" in captured.out
    table = pd.read_csv(out / "ltsf.csv")
    assert list(table["mode"]) == ["channel_independent", "baseline:linear", "channel_independent"]
    assert (out / "ltsf.md").is_file()

    args, extra = sweep.parse_args(argv + ["--eval-batch-size", "64"])  # other harness flags are passed on
    assert extra == ["--eval-batch-size", "64"] and args.presets == presets
    with pytest.raises(SystemExit):
        sweep.parse_args(argv + ["--no-baselines"])
    assert "the sweep sets them for each run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.parse_args(["--presets", "etth1_96", "--data-dir", str(tmp_path / "missing")])
    assert "run preset 'etth1_96'" in capsys.readouterr().err


def test_max_time_stops_training_and_is_recorded_in_the_label(bench, tmp_path):
    import lightning as L

    presets = _tiny_presets(tmp_path)
    args = bench.parse_args(["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "200000",
                             "--val-check-steps", "50", "--max-time", "2"])
    assert args.label == "a_8/tiny (batch_size 8, max_steps 200000, val_check_steps 50) (max 2 s)"

    class LastStep(L.Callback):
        def on_fit_end(self, trainer, pl_module):
            self.step = trainer.global_step

    last = LastStep()
    data = load_ltsf(args.data, args.split)
    model = bench.fit_forecaster(args, data, seed=0, callbacks=(last,))
    assert 0 < last.step < args.max_steps  # stopped by the clock, not the step budget
    assert model.best_step_ is None or model.best_step_ <= last.step
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", presets[0], "--data-dir", str(tmp_path), "--max-time", "0"])


def test_verbose_prints_training_progress(bench, tmp_path, monkeypatch, capsys):
    presets = _tiny_presets(tmp_path)
    monkeypatch.chdir(tmp_path)  # a verbose fit keeps a CSV log under ./lightning_logs
    args = bench.parse_args(["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "10",
                             "--val-check-steps", "5", "--verbose"])
    bench.fit_forecaster(args, load_ltsf(args.data, args.split), seed=0)
    out = capsys.readouterr().out
    assert "step 10/10" in out and "val_loss" in out


def test_speed_flags_reach_the_forecaster_and_the_label(bench, tmp_path):
    presets = _tiny_presets(tmp_path)
    base = ["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "2"]
    assert bench.parse_args(base).label == "a_8/tiny (batch_size 8, max_steps 2, val_check_steps 2)"
    args = bench.parse_args(base + ["--compile", "--cuda-graphs"])
    assert args.label == "a_8/tiny (batch_size 8, max_steps 2, val_check_steps 2) (compiled, CUDA graphs)"
    assert args.compile and args.cuda_graphs
    data = load_ltsf(args.data, args.split)
    with pytest.raises(ValueError, match="cuda_graphs=True needs a fit on one CUDA device"):
        bench.fit_forecaster(args, data, seed=0)  # the flag reaches the forecaster; on the CPU it is refused


def test_head_comes_from_the_preset_or_the_flag_and_reaches_the_forecaster(bench, tmp_path, one_thread):
    presets = _tiny_presets(tmp_path)
    base = ["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "2", "--val-check-steps", "1"]
    assert bench.parse_args(base).head == "quantile"
    args = bench.parse_args(base + ["--head", "mse"])
    assert args.label == "a_8/tiny (batch_size 8, max_steps 2, val_check_steps 1) (head mse)"
    model = bench.fit_forecaster(args, load_ltsf(args.data, args.split), seed=0)
    assert model.head == "mse" and type(model.net_.head).__name__ == "MSEHead"
    mse_preset = tmp_path / "m_8.yaml"
    mse_preset.write_text(Path(presets[0]).read_text() + "head: mse\n")
    assert bench.parse_args(["--preset", str(mse_preset), "--data-dir", str(tmp_path)]).label == \
        f"m_8/tiny {T} (head mse)"


def test_weight_decay_comes_from_the_preset_or_the_flag_and_reaches_the_forecaster(bench, tmp_path, one_thread):
    presets = _tiny_presets(tmp_path)
    base = ["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "2", "--val-check-steps", "1"]
    assert bench.parse_args(base).weight_decay == LTSFRunConfig.weight_decay  # the forecaster's default, unlabelled
    args = bench.parse_args(base + ["--weight-decay", "0.05"])
    assert args.label == "a_8/tiny (batch_size 8, max_steps 2, val_check_steps 1, weight_decay 0.05)"
    model = bench.fit_forecaster(args, load_ltsf(args.data, args.split), seed=0)
    assert model.weight_decay == 0.05
    decayed = tmp_path / "w_8.yaml"
    decayed.write_text(Path(presets[0]).read_text() + "weight_decay: 0.05\n")
    assert bench.parse_args(["--preset", str(decayed), "--data-dir", str(tmp_path)]).label == \
        "w_8/tiny (batch_size 8, max_steps 3, val_check_steps 2, weight_decay 0.05)"


def test_model_set_changes_model_fields_and_is_recorded_in_the_label(bench, tmp_path, one_thread, capsys):
    presets = _tiny_presets(tmp_path)
    base = ["--preset", presets[0], "--data-dir", str(tmp_path), "--max-steps", "2", "--val-check-steps", "1"]
    args = bench.parse_args(base + ["--model-set", "embed_dim=8", "dropout=0.05", "pattern=ms"])
    assert args.label == ("a_8/tiny (batch_size 8, max_steps 2, val_check_steps 1) (embed_dim 8, dropout 0.05, "
                          "pattern ms)")
    model = bench.fit_forecaster(args, load_ltsf(args.data, args.split), seed=0)
    cfg = model.net_.cfg
    assert (cfg.embed_dim, cfg.dropout, cfg.pattern) == (8, 0.05, "ms")
    assert cfg.patch_length == resolve_config("tiny").patch_length  # the fields not named keep the preset's values
    for bad, message in [("embed=8", "FIELD one of"), ("mode=variate_mixing", "'mode' has --mode"),
                         ("embed_dim=7", "divisible by num_heads"), ("dropout=[1", "as YAML")]:
        with pytest.raises(SystemExit):
            bench.parse_args(base + ["--model-set", bad])
        assert message in capsys.readouterr().err
