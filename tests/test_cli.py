"""The command line: fit, predict and cv on a CSV, and --help."""

import json

import numpy as np
import pandas as pd
import pytest

from xlstm_ts.cli import build_parser, main
from xlstm_ts.datasets import make_synthetic_panel


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "panel.csv"
    make_synthetic_panel(n_series=2, length=120, seed=4).to_csv(path, index=False)
    return path


def test_fit_then_predict(data, tmp_path):
    common = ["--config", "tiny", "--data", str(data), "--horizon", "6", "--context", "24", "--max-steps", "2",
              "--batch-size", "8"]
    assert main(["fit", *common, "--out", str(tmp_path / "run")]) == 0
    fitted = pd.read_csv(tmp_path / "run" / "forecast.csv")
    assert list(fitted.columns) == ["unique_id", "ds", "mean", "q0.1", "q0.5", "q0.9"] and len(fitted) == 12
    assert main(["predict", "--model-dir", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "pred")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pred" / "forecast.csv"), fitted)


def test_cv_writes_windows_and_metrics(data, tmp_path):
    args = ["cv", "--config", "tiny", "--data", str(data), "--horizon", "6", "--context", "24", "--max-steps", "2",
            "--batch-size", "8", "--n-windows", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    assert len(pd.read_csv(tmp_path / "cv.csv")) == 2 * 2 * 6
    summary = json.loads((tmp_path / "cv_metrics.json").read_text())
    assert {"mae", "mse", "wql", "coverage_q0.1_q0.9"} <= set(summary)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--data", "--out", "--horizon", "--quantiles", "--head", "--val-size"):
        assert option in text


def test_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["fit", "--data", str(tmp_path / "nope.csv")])


def test_tune_prints_the_best_and_saves_the_refit_model(data, tmp_path, capsys):
    from xlstm_ts import XLSTMForecaster

    pytest.importorskip("optuna")
    pytest.importorskip("optuna_integration")
    args = ["tune", "--config", "tiny", "--data", str(data), "--horizon", "6", "--n-trials", "2", "--max-steps", "2",
            "--val-check-steps", "2", "--pruner", "none", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
            "--study-name", "cli", "--save-model", "--out", str(tmp_path / "tune")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    best = json.loads((tmp_path / "tune" / "best_params.json").read_text())
    assert best["n_complete"] == 2 and best["study_name"] == "cli"
    assert f"best mase = {best['best_value']:.6g}" in printed and '"learning_rate"' in printed
    assert {"learning_rate", "embed_dim", "patch_length", "head"} <= set(best["params"])
    model = XLSTMForecaster.load(tmp_path / "tune" / "model")
    assert model.prediction_length == 6 and len(model.predict()) == 2 * 6


SPACE = """
def space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)}
"""


def test_tune_takes_a_search_space_file_and_resumes_the_study(data, tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("optuna_integration")
    (tmp_path / "my_space.py").write_text(SPACE)
    args = ["tune", "--config", "tiny", "--data", str(data), "--horizon", "6", "--max-steps", "2",
            "--val-check-steps", "2", "--pruner", "none", "--storage", str(tmp_path / "study.journal"),
            "--search-space", f"{tmp_path / 'my_space.py'}:space", "--out", str(tmp_path)]
    assert main([*args, "--n-trials", "1"]) == 0
    assert main([*args, "--n-trials", "2"]) == 0
    best = json.loads((tmp_path / "best_params.json").read_text())
    assert best["n_complete"] == 2 and set(best["params"]) == {"learning_rate"}
    assert best["forecaster_params"]["model"]["embed_dim"] == 32  # the tiny preset, untouched by the space
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--n-trials, --timeout or both"),
    (["--n-trials", "1", "--search-space", "no_colon"], "MODULE:FUNCTION or FILE.py:FUNCTION"),
    (["--n-trials", "1", "--search-space", "json:no_such_function"], "has no function 'no_such_function'"),
])
def test_tune_option_errors_say_how_to_fix_them(data, extra, message):
    with pytest.raises(SystemExit, match=message):
        main(["tune", "--data", str(data), *extra])


def test_covariates_from_the_command_line(tmp_path):
    from xlstm_ts import XLSTMForecaster
    from xlstm_ts.datasets import make_covariate_panel

    frame = make_covariate_panel(n_series=2, length=96, seed=3)
    static = frame.groupby("unique_id", as_index=False)[["store_size", "region"]].first()
    frame = frame.drop(columns=["store_size", "region"])
    frame.to_csv(tmp_path / "panel.csv", index=False)
    static.to_csv(tmp_path / "static.csv", index=False)
    common = ["--config", "tiny", "--data", str(tmp_path / "panel.csv"), "--horizon", "6", "--context", "24",
              "--max-steps", "2", "--batch-size", "8", "--future-covariates", "promo", "temperature",
              "--static-covariates", "store_size", "region", "--static-data", str(tmp_path / "static.csv")]
    assert main(["fit", *common, "--out", str(tmp_path / "run")]) == 0
    template = pd.read_csv(tmp_path / "run" / "future_frame.csv")  # no --futr-data: the frame to fill
    assert list(template.columns) == ["unique_id", "ds", "promo", "temperature"] and len(template) == 12
    assert template[["promo", "temperature"]].isna().all().all()
    template["promo"], template["temperature"] = 1.0, 20.0
    template.to_csv(tmp_path / "futr.csv", index=False)
    model_dir = tmp_path / "run" / "model"
    assert main(["predict", "--model-dir", str(model_dir), "--futr-data", str(tmp_path / "futr.csv"),
                 "--static-data", str(tmp_path / "static.csv"), "--out", str(tmp_path / "pred")]) == 0
    forecast = pd.read_csv(tmp_path / "pred" / "forecast.csv")
    model = XLSTMForecaster.load(model_dir)
    expected = model.predict(futr_df=template.assign(ds=pd.to_datetime(template["ds"])), static_df=static)
    assert len(forecast) == 12
    np.testing.assert_allclose(forecast["mean"], expected["mean"], rtol=1e-6)
    with pytest.raises(ValueError, match="promo"):  # the model needs the planned values
        main(["predict", "--model-dir", str(model_dir), "--out", str(tmp_path / "bad")])
    assert main(["cv", *common, "--n-windows", "2", "--out", str(tmp_path / "cv")]) == 0
    assert len(pd.read_csv(tmp_path / "cv" / "cv.csv")) == 2 * 2 * 6
    tune_args = ["--config", "tiny", "--data", str(tmp_path / "panel.csv"), "--horizon", "6", "--max-steps", "4",
                 "--val-check-steps", "2", *common[common.index("--future-covariates"):]]
    assert main(["tune", *tune_args, "--n-trials", "1", "--pruner", "none", "--out", str(tmp_path / "tune")]) == 0
    best = json.loads((tmp_path / "tune" / "best_params.json").read_text())["forecaster_params"]
    assert best["future_covariates"] == ["promo", "temperature"] and best["static_covariates"] == ["store_size",
                                                                                                  "region"]
