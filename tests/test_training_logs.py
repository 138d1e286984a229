"""What a fit shows and writes: silent by default, CSV logs on request, progress lines or a bar with verbose=True."""

import pandas as pd
import pytest

from xlstm_ts import XLSTMForecaster, training_utils
from xlstm_ts.datasets import make_synthetic_panel

TINY = dict(prediction_length=6, context_length=24, model="tiny", max_steps=4, batch_size=8)


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=2, length=100, seed=1)


def test_default_fit_prints_and_writes_nothing(panel, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    f = XLSTMForecaster(**TINY).fit(panel)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(tmp_path.iterdir()) == [] and f.log_dir_ is None


def test_log_dir_gets_a_csv_log_per_fit(panel, tmp_path, capfd):
    f = XLSTMForecaster(**TINY, val_size=12, val_check_steps=2, log_dir=tmp_path / "runs").fit(panel)
    assert capfd.readouterr() == ("", "")  # a log is not a reason to talk
    metrics = pd.read_csv(tmp_path / "runs" / "version_0" / "metrics.csv")
    assert {"train_loss", "val_loss", "step"} <= set(metrics.columns)
    assert metrics["val_loss"].notna().sum() == 2 and any(c.startswith("lr-") for c in metrics.columns)
    f.fit(panel)  # a second fit never overwrites the first log
    assert f.log_dir_.endswith("version_1") and (tmp_path / "runs" / "version_1" / "metrics.csv").is_file()


def test_verbose_prints_progress_lines_and_logs_to_lightning_logs(panel, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training_utils, "interactive", lambda: False)  # a pipe or a CI log: lines, not a bar
    f = XLSTMForecaster(**{**TINY, "max_steps": 20}, verbose=True).fit(panel)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 2/20  train_loss ") and lines[-1].startswith("step 20/20")
    assert (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").is_file()
    assert f.log_dir_ == str(tmp_path / "lightning_logs" / "version_0")


def test_progress_bar_only_in_interactive_verbose_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(training_utils, "interactive", lambda: True)
    trainer, _ = training_utils.make_trainer(XLSTMForecaster(verbose=True, log_dir=tmp_path), validate=False)
    assert trainer.progress_bar_callback is not None
    assert not any(isinstance(c, training_utils.PrintProgress) for c in trainer.callbacks)
    trainer, _ = training_utils.make_trainer(XLSTMForecaster(verbose=False), validate=False)
    assert trainer.progress_bar_callback is None and trainer.logger is None


def test_trainer_kwargs_logger_wins(panel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = XLSTMForecaster(**TINY, verbose=True, trainer_kwargs={"logger": False}).fit(panel)
    assert f.log_dir_ is None and not (tmp_path / "lightning_logs").exists()
