"""Examples run end to end with tiny budgets: quickstart, backtest, covariates and tuning scripts, the quickstart
notebook."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_script(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path),
                             "--max-steps", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "seasonal naive" in result.stdout
    assert (tmp_path / "forecast.csv").is_file() and (tmp_path / "model" / "forecaster.json").is_file()


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("XLSTM_TS_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("test MAE" in o.get("text", "") for o in outputs)
    assert os.environ["XLSTM_TS_SMOKE"] == "1"


def test_backtest_script(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "backtest.py"), "--out", str(tmp_path),
                             "--max-steps", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("%") >= 4 and (tmp_path / "backtest.csv").is_file()


def test_covariates_script(tmp_path):
    env = {**os.environ, "XLSTM_TS_SMOKE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "covariates.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test MAE without covariates" in result.stdout and "test MAE with covariates" in result.stdout
    assert (tmp_path / "covariates_forecast.csv").is_file()
    assert (tmp_path / "covariates_model" / "forecaster.json").is_file()


def test_tuning_script(tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("optuna_integration")
    env = {**os.environ, "XLSTM_TS_SMOKE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "tuning.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best validation MASE" in result.stdout and "learning_rate = " in result.stdout
    assert (tmp_path / "tuning.db").is_file()
