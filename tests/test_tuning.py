"""Optuna search: pruning of a bad region, persistent studies that resume, journal storage."""

import time

import numpy as np
import pytest

from xlstm_ts import XLSTMForecaster, tune
from xlstm_ts.datasets import make_synthetic_panel

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=3, length=300, seed=0)


def bad_lr_space(trial):
    return {"learning_rate": trial.suggest_categorical("learning_rate", [1e-3, 10.0]),
            "model": {"embed_dim": 16, "num_heads": 2, "pattern": "m", "patch_length": 8}}


def _run(panel, pruner):
    # CPU time of this process: the work the search did, unaffected by other processes sharing the machine
    start = time.process_time()
    result = tune(panel, 12, n_trials=6, search_space=bad_lr_space, max_steps=100, val_check_steps=10, pruner=pruner,
                  random_state=0, refit=False)
    return result, time.process_time() - start


def test_bad_region_is_pruned_and_saves_time(panel):
    pruned, t_pruned = _run(panel, "median")
    full, t_full = _run(panel, "none")
    states = [t.state for t in pruned.study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    assert all(t.params["learning_rate"] == 10.0 for t in pruned.study.trials if t.state.name == "PRUNED")
    assert pruned.best_params["learning_rate"] == 1e-3
    assert not any(t.state.name == "PRUNED" for t in full.study.trials)
    assert t_pruned < t_full, (t_pruned, t_full)


def test_sqlite_study_resumes_to_the_requested_count(panel, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = tune(panel, 12, n_trials=2, search_space=bad_lr_space, storage=url, study_name="s", max_steps=20,
                 val_check_steps=10, pruner="none", random_state=0, refit=False)
    assert len(first.study.trials) == 2
    again = tune(panel, 12, n_trials=3, search_space=bad_lr_space, storage=url, study_name="s", max_steps=20,
                 val_check_steps=10, pruner="none", random_state=0)
    assert len(again.study.trials) == 3
    assert isinstance(again.forecaster, XLSTMForecaster) and len(again.forecaster.predict()) == 3 * 12


def test_journal_storage(panel, tmp_path):
    result = tune(panel, 12, n_trials=2, search_space=bad_lr_space, storage=str(tmp_path / "study.journal"),
                  study_name="j", max_steps=20, val_check_steps=10, pruner="none", metric="wql", refit=False)
    loaded = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    assert len(loaded.trials) == 2 and result.study.best_value == loaded.best_value


def test_invalid_metric_and_pruner(panel):
    with pytest.raises(ValueError, match="metric"):
        tune(panel, 12, n_trials=1, metric="rmse")
    with pytest.raises(ValueError, match="pruner"):
        tune(panel, 12, n_trials=1, pruner="asha")


def test_default_space_builds_valid_forecasters(panel):
    result = tune(panel, 12, n_trials=2, max_steps=5, val_check_steps=5, pruner="none", random_state=1, refit=False)
    assert result.best_params["context_length"] % 12 == 0
    assert set(result.study.best_trial.params) >= {"learning_rate", "embed_dim", "patch_length", "head"}


WORKER = """
import sys, time
from pathlib import Path
from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel

marker = Path(sys.argv[2])

def space(trial):
    marker.write_text(str(trial.number))
    time.sleep(60)  # the parent kills this worker here, mid-trial
    return {}

tune(make_synthetic_panel(n_series=3, length=300, seed=0), 12, n_trials=2, search_space=space, storage=sys.argv[1],
     study_name="crash", max_steps=5, val_check_steps=5, pruner="none", refit=False, heartbeat_interval=1,
     grace_period=2)
"""


def test_killed_worker_trial_is_failed_and_retried(panel, tmp_path):
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    marker = tmp_path / "started"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen([sys.executable, str(script), url, str(marker)])
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the worker never started a trial"
    time.sleep(1.5)  # let a heartbeat reach the storage
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period: the trial is now stale

    def space(trial):
        return {"model": {"embed_dim": 16, "num_heads": 2, "pattern": "m", "patch_length": 8}}

    result = tune(panel, 12, n_trials=2, search_space=space, storage=url, study_name="crash", max_steps=5,
                  val_check_steps=5, pruner="none", refit=False, heartbeat_interval=1, grace_period=2)
    states = [t.state.name for t in result.study.trials]
    assert states.count("FAIL") == 1, states
    assert states.count("COMPLETE") == 2, states
    failed = next(t for t in result.study.trials if t.state.name == "FAIL")
    retried = [t for t in result.study.trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retried, "the stale trial was not retried"


PARALLEL_WORKER = """
import sys
from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel

def space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "model": {"embed_dim": 16, "num_heads": 2, "pattern": "m", "patch_length": 8}}

tune(make_synthetic_panel(n_series=3, length=300, seed=0), 12, n_trials=4, search_space=space, storage=sys.argv[1],
     study_name="shared", max_steps=5, val_check_steps=5, pruner="none", refit=False)
"""


def test_two_workers_share_a_journal_study(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(PARALLEL_WORKER)
    journal = str(tmp_path / "shared.journal")
    procs = [subprocess.Popen([sys.executable, str(script), journal]) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))  # no duplicated trial
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5 and len(complete) == len(study.trials)  # none lost; at most one racing extra


def test_covariate_models_are_tuned_on_the_frames_future_values():
    from xlstm_ts.datasets import make_covariate_panel

    df = make_covariate_panel(n_series=3, length=150, seed=2)
    static_df = df.groupby("unique_id", as_index=False)[["store_size", "region"]].first()
    df = df.drop(columns=["store_size", "region"])
    roles = dict(future_covariates=["promo", "temperature"], static_covariates=["store_size", "region"])
    space = lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 3e-3)}  # noqa: E731
    result = tune(df, 6, n_trials=2, search_space=space, max_steps=5, val_check_steps=5, pruner="none",
                  metric="mae", base_params={**roles, "model": "tiny", "context_length": 24, "batch_size": 8},
                  random_state=0, static_df=static_df)
    assert result.best_params["future_covariates"] == ["promo", "temperature"]
    model = result.forecaster
    assert list(model.covariates_.future) == ["promo", "temperature"]
    # the objective is the MAE of the last 6 steps forecast with their known promo/temperature, as the trial
    # forecaster scores them; refitting the best parameters on the training part reproduces the best value
    trial = XLSTMForecaster(**result.best_params, val_size=6, val_check_steps=5).fit(df, static_df)
    is_tail = df.groupby("unique_id").cumcount(ascending=False) < 6
    pred = trial.predict(df[~is_tail], futr_df=df[is_tail], static_df=static_df)
    expected = float(np.mean(np.abs(pred["mean"].to_numpy() - df[is_tail]["y"].to_numpy())))
    assert result.study.best_value == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="n_windows"):
        tune(df, 6, n_trials=1, n_windows=30, search_space=space, base_params=roles, static_df=static_df)
