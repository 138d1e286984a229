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
