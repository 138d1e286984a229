"""The command line: fit, predict and cv on a CSV, and --help."""

import json

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
