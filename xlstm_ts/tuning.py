"""Hyperparameter search with Optuna (extra `[tune]`): pruning on validation loss, persistent and resumable studies."""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xlstm_ts.backtest import tail_forecasts
from xlstm_ts.config import resolve_config
from xlstm_ts.datasets.frame import validate_long_frame
from xlstm_ts.forecaster import XLSTMForecaster
from xlstm_ts.metrics import mae, mase, mse, season_length, weighted_quantile_loss

METRICS = ("mase", "mae", "mse", "wql")
logger = logging.getLogger("xlstm_ts.tune")


def _optuna():
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError as err:
        raise ImportError("tune needs optuna and optuna-integration: pip install 'xlstm_ts[tune]'.") from err
    return optuna, PyTorchLightningPruningCallback


def default_search_space(trial) -> dict:
    """The documented default space: context length multiplier, patch length, width, block pattern, number of
    blocks, dropout, learning rate, batch size and head. Returns XLSTMForecaster parameters; "model" is a dict of
    ModelConfig fields and "context_length_multiplier" multiplies prediction_length."""
    blocks = trial.suggest_int("num_blocks", 1, 4)
    mix = trial.suggest_categorical("block_mix", ["m", "ms", "msm"])
    return {
        "context_length_multiplier": trial.suggest_int("context_length_multiplier", 2, 8),
        "model": {
            "patch_length": trial.suggest_categorical("patch_length", [4, 8, 16, 24]),
            "embed_dim": trial.suggest_categorical("embed_dim", [16, 32, 64, 128]),
            "pattern": (mix * blocks)[:blocks],
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        },
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "head": trial.suggest_categorical("head", ["quantile", "student_t"]),
    }


@dataclass
class TuneResult:
    """Outcome of `tune`: the Optuna study, the best forecaster parameters and a forecaster refit on all data."""

    study: object
    best_params: dict
    forecaster: XLSTMForecaster


def _forecaster_params(space: dict, prediction_length: int, base: dict) -> dict:
    params = {**base, **{k: v for k, v in space.items() if k not in ("model", "context_length_multiplier")}}
    model = resolve_config(base.get("model", "small"))
    if "model" in space:
        model = dataclasses.replace(model, **space["model"])
    params["model"] = model
    if "context_length_multiplier" in space:
        params["context_length"] = int(space["context_length_multiplier"]) * prediction_length
    params["prediction_length"] = prediction_length
    return params


def _validation_score(forecaster: XLSTMForecaster, df: pd.DataFrame, static_df: pd.DataFrame | None,
                      n_windows: int, metric: str) -> float:
    """Metric of forecasts for the last n_windows x horizon steps (windows every horizon steps), no refit."""
    history, y, out = tail_forecasts(forecaster, df, static_df, n_windows)
    if metric == "mase":
        return mase(y, out["mean"], history, season_length(forecaster.freq_))
    if metric == "wql":
        return weighted_quantile_loss(y, out["quantiles"], forecaster.levels_)
    return mae(y, out["mean"]) if metric == "mae" else mse(y, out["mean"])


def make_storage(storage: str | None, heartbeat_interval: int = 10, grace_period: int = 30):
    """An Optuna storage: None (in memory), a journal file ('journal:PATH' or a path ending in .log/.journal), or an
    RDB URL (sqlite:///..., postgresql://...) with heartbeats: a running trial whose worker has sent none for
    `grace_period` seconds is marked failed and retried (up to 3 times) by the next worker that starts a trial."""
    optuna, _ = _optuna()
    if storage is None:
        return None
    if storage.startswith("journal:") or storage.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    # workers that start together on an empty database race to create the same tables; the losers get an error
    # from the server and succeed on a retry, which finds the tables in place
    races = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError)
    with warnings.catch_warnings():  # heartbeats are marked experimental in optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        if retry is not None:  # optuna >= 4.9
            callback = {"heartbeat_stale_trial_callback": retry(max_retry=3)}
        else:
            callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
        for attempt in range(5):
            try:
                return RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                  **callback)
            except ImportError as err:
                raise ImportError(f"storage {storage.split(':')[0]!r} needs its database driver, which is not "
                                  "installed: pip install 'xlstm_ts[postgres]' for postgresql:// URLs (psycopg2), "
                                  "or install the driver that the URL names.") from err
            except races:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))


def tune(df: pd.DataFrame, prediction_length: int, n_trials: int | None = None, timeout: float | None = None,
         search_space: Callable | None = None, storage: str | None = None, study_name: str | None = None,
         pruner: str = "hyperband", metric: str = "mase", n_windows: int = 1, random_state: int | None = None,
         max_steps: int = 300, val_check_steps: int = 50, base_params: dict | None = None,
         refit: bool = True, heartbeat_interval: int = 10, grace_period: int = 30,
         static_df: pd.DataFrame | None = None) -> TuneResult:
    """Search forecaster hyperparameters on the last `n_windows * prediction_length` steps of every series.

    Each trial trains on the data before that tail, reports its validation loss every `val_check_steps` steps to
    the pruner ("hyperband", "median" or "none"), and is scored by `metric` (mase, mae, mse, wql) on the tail.
    `storage` persists the study (see `make_storage`); the same `study_name` resumes it, and `n_trials` counts
    finished (complete or pruned) trials of the whole study, so several workers can share one study.
    Covariates: name their columns in `base_params` (`past_covariates`, `future_covariates`, `static_covariates`);
    dynamic ones are columns of `df` (future ones over the validation tail too), static ones come from `static_df`
    or from columns constant per series.

    Returns:
        TuneResult with `.study`, `.best_params` (forecaster parameters) and `.forecaster` (refit on all of `df`
        with the best parameters when `refit`).
    """
    optuna, PruningCallback = _optuna()
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    pruners = {"hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
               "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=val_check_steps),
               "none": optuna.pruners.NopPruner}
    if pruner not in pruners:
        raise ValueError(f"pruner must be one of {list(pruners)}, got {pruner!r}.")
    base = {"max_steps": max_steps, "random_state": random_state, **(base_params or {})}
    base.setdefault("model", "small")
    panel = validate_long_frame(df, base.get("id_col", "unique_id"), base.get("time_col", "ds"),
                                base.get("target_col", "y"), base.get("freq"))
    tail = n_windows * prediction_length
    if min(len(v) for v in panel.values) <= tail + 1:
        raise ValueError(f"tune validates on the last n_windows * prediction_length = {tail} steps of each series and "
                         f"trains on the steps before them; the shortest series has {min(map(len, panel.values))} "
                         "rows. Lower n_windows or prediction_length, or drop the short series.")
    space = search_space or default_search_space
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class StepPruning(PruningCallback):
        """optuna-integration's callback, reporting at the global step (training here is step-based, one epoch)."""

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
                return
            value = float(trainer.callback_metrics[self.monitor])
            if not np.isfinite(value):  # diverged: stop now when pruning, else leave it out of the reports
                if pruner == "none":
                    return
                raise optuna.TrialPruned(f"validation loss {value} at step {trainer.global_step}")
            self._trial.report(value, step=trainer.global_step)
            if self._trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {trainer.global_step}")

    def objective(trial) -> float:
        params = _forecaster_params(space(trial), prediction_length, base)
        trainer_kwargs = dict(params.pop("trainer_kwargs", None) or {})
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), StepPruning(trial, monitor="val_loss")]
        forecaster = XLSTMForecaster(**params, val_size=tail, val_check_steps=val_check_steps,
                                     trainer_kwargs=trainer_kwargs)
        try:
            forecaster.fit(df, static_df)
            return _validation_score(forecaster, df, static_df, n_windows, metric)
        finally:
            del forecaster
            gc.collect()

    def summary(study, trial) -> None:
        value = f"{metric}={trial.value:.4f}" if trial.state.name == "COMPLETE" else "no score"
        if trial.state.name == "PRUNED" and trial.intermediate_values:  # optuna keeps the last report as value
            step = max(trial.intermediate_values)
            value = f"val_loss={trial.intermediate_values[step]:.4f} at step {step}"
        logger.warning("trial %d %s: %s %s", trial.number, trial.state.name.lower(), value, trial.params)

    sampler = optuna.samplers.TPESampler(seed=random_state)
    study = optuna.create_study(storage=make_storage(storage, heartbeat_interval, grace_period),
                                study_name=study_name, load_if_exists=True, direction="minimize", sampler=sampler,
                                pruner=pruners[pruner]())
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    callbacks, remaining = [summary], None
    if n_trials is not None:  # counted over the whole study, so resumed and parallel workers stop at n_trials
        callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=finished))
        remaining = n_trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining is None or remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=callbacks, catch=())
    best = copy.deepcopy(study.best_trial)
    best_params = _forecaster_params(space(optuna.trial.FixedTrial(best.params)), prediction_length, base)
    forecaster = XLSTMForecaster(**best_params)
    if refit:
        forecaster.fit(df, static_df)
    return TuneResult(study=study, best_params=best_params, forecaster=forecaster)


__all__ = ["METRICS", "TuneResult", "default_search_space", "make_storage", "tune"]
