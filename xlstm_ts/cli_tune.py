"""`python -m xlstm_ts tune ...`: an Optuna search from the command line (extra `[tune]`).

Several processes started with the same `--storage` and `--study-name` work on one study; `--n-trials` counts the
finished trials of the whole study, so each worker stops once the study has them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from xlstm_ts.tuning import METRICS, tune


def add_tune_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-trials", type=int, default=None,
                        help="finished (complete or pruned) trials the study should have, counted over all workers")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: sqlite:///study.db, postgresql+psycopg2://user:pw@host/db, or a "
                             "journal file (*.journal); default: in memory (nothing kept)")
    parser.add_argument("--study-name", "--study", default="xlstm_ts",
                        help="study to create or resume in --storage")
    parser.add_argument("--metric", default="mase", choices=METRICS, help="validation metric to minimise")
    parser.add_argument("--pruner", default="hyperband", choices=["hyperband", "median", "none"],
                        help="stops trials whose validation loss falls behind")
    parser.add_argument("--n-windows", type=int, default=1,
                        help="validation windows of --horizon steps at the end of each series")
    parser.add_argument("--max-steps", type=int, default=300, help="optimizer steps per trial")
    parser.add_argument("--val-check-steps", type=int, default=50,
                        help="training steps between validation losses reported to the pruner")
    parser.add_argument("--search-space", default=None,
                        help="MODULE:FUNCTION or FILE.py:FUNCTION, a function trial -> dict of forecaster "
                             "parameters (default: xlstm_ts.default_search_space)")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9], help="quantile levels")
    parser.add_argument("--save-model", action="store_true",
                        help="refit the best parameters on all of --data and save the model to OUT/model")


def load_search_space(spec: str | None) -> Callable | None:
    """The function named by 'MODULE:FUNCTION' or 'FILE.py:FUNCTION' (None: the default space)."""
    if spec is None:
        return None
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise SystemExit(f"error: --search-space expects MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise SystemExit(f"error: search space file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    space = getattr(module, name, None)
    if not callable(space):
        raise SystemExit(f"error: --search-space {spec!r}: {target} has no function {name!r}; define "
                         f"`def {name}(trial): return {{...}}` there or name another one")
    return space


def _jsonable(params: dict) -> dict:
    out = {k: v for k, v in params.items() if k != "trainer_kwargs"}
    if dataclasses.is_dataclass(out.get("model")):
        out["model"] = dataclasses.asdict(out["model"])
    return out


def run_tune(args: argparse.Namespace, df: pd.DataFrame, static_df: pd.DataFrame | None = None) -> dict:
    """Runs the search described by the parsed `tune` options; writes OUT/best_params.json and returns it."""
    if args.n_trials is None and args.timeout is None:
        raise SystemExit("error: tune needs --n-trials, --timeout or both; without either the search never stops")
    base = {"model": args.config, "quantiles": tuple(args.quantiles), "id_col": args.id_col,
            "time_col": args.time_col, "target_col": args.target_col,
            "trainer_kwargs": {"accelerator": args.accelerator}, "past_covariates": args.past_covariates,
            "future_covariates": args.future_covariates, "static_covariates": args.static_covariates}
    result = tune(df, args.horizon, n_trials=args.n_trials, timeout=args.timeout,
                  search_space=load_search_space(args.search_space), storage=args.storage,
                  study_name=args.study_name, pruner=args.pruner, metric=args.metric, n_windows=args.n_windows,
                  random_state=args.seed, max_steps=args.max_steps, val_check_steps=args.val_check_steps,
                  base_params=base, refit=args.save_model, static_df=static_df)
    states = [t.state.name for t in result.study.get_trials(deepcopy=False)]
    best = result.study.best_trial
    summary = {"study_name": result.study.study_name, "metric": args.metric, "best_value": best.value,
               "best_trial": best.number, "n_complete": states.count("COMPLETE"), "n_pruned": states.count("PRUNED"),
               "n_failed": states.count("FAIL"), "params": best.params,
               "forecaster_params": _jsonable(result.best_params)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "best_params.json").write_text(json.dumps(summary, indent=1))
    print(f"best {args.metric} = {best.value:.6g} (trial {best.number}; {summary['n_complete']} complete, "
          f"{summary['n_pruned']} pruned, {summary['n_failed']} failed)")
    print(json.dumps(best.params, indent=1))
    if args.save_model:
        result.forecaster.save(out / "model")
        print(f"saved the refit best model to {out / 'model'}")
    print(f"wrote {out / 'best_params.json'}")
    return summary
