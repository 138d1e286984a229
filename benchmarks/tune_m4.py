"""Does `xlstm_ts.tune` improve on the default forecaster? M4 Hourly subset, fixed small CPU budget.

Protocol: --series series of M4 Hourly drawn with a fixed seed, official training part only (the test part is never
used). The last 48 steps (one horizon) of each training series are the validation window; every model trains on the
steps before it and is scored by MASE (season 24, scale from the history before the window) on it.

- default (as shipped): `XLSTMForecaster(prediction_length=48)` with every default (200 steps, preset "small",
  no validation tail), fitted on the steps before the window.
- default (trial protocol): the same default hyperparameters trained exactly as a trial is: --max-steps steps, the
  window scored every --val-check-steps steps and the best weights kept (`tune` with an empty search space).
- tuned: `tune` with --trials trials of the CPU-sized space below, the same steps per trial; the best trial's MASE.
  It is the minimum over the trials on the same window, so it is optimistic by selection. No pruning by default:
  pruners compare the validation loss that a trial reports, and the quantile head's pinball loss and the Student-t
  likelihood in this space are on different scales.
- seasonal naive: the last 24 values repeated, for scale.
- check: the default and the best parameters trained again under the trial protocol with --check-seeds other seeds.

Usage (writes benchmarks/results/tune_m4.md and .json):
    python benchmarks/tune_m4.py --series 64 --trials 16 --max-steps 300 [--data-dir ../shared/datasets]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from xlstm_ts import XLSTMForecaster, tune
from xlstm_ts.datasets import read_m4
from xlstm_ts.m4_metrics import seasonal_naive
from xlstm_ts.metrics import mase

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
HORIZON, SEASON = 48, 24


def space(trial) -> dict:
    """Sized for a few minutes of CPU per trial: widths 32-64, 1-3 blocks."""
    return {
        "context_length_multiplier": trial.suggest_int("context_length_multiplier", 2, 7),
        "model": {
            "patch_length": trial.suggest_categorical("patch_length", [8, 16, 24]),
            "embed_dim": trial.suggest_categorical("embed_dim", [32, 64]),
            "pattern": trial.suggest_categorical("pattern", ["m", "ms", "msm"]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        },
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "head": trial.suggest_categorical("head", ["quantile", "student_t"]),
    }


def data_dir(arg: str | None) -> str:
    chosen = arg or os.environ.get("XLSTM_TS_DATA") or str(ROOT.parent / "shared" / "datasets")
    if not (Path(chosen) / "M4").is_dir():
        raise SystemExit(f"M4 files not found: expected {chosen}/M4/Train/Hourly-train.csv[.gz]; pass --data-dir "
                         "or set XLSTM_TS_DATA to the folder that holds M4/.")
    return chosen


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=64, help="M4 Hourly series in the subset")
    parser.add_argument("--trials", type=int, default=16, help="finished (complete or pruned) tuning trials")
    parser.add_argument("--max-steps", type=int, default=300, help="training steps per trial")
    parser.add_argument("--val-check-steps", type=int, default=50, help="steps between validations in a trial")
    parser.add_argument("--pruner", default="none", choices=["hyperband", "median", "none"],
                        help="default none: the space mixes heads, whose validation losses are not comparable")
    parser.add_argument("--seed", type=int, default=0, help="subset draw, weights and sampler seed")
    parser.add_argument("--check-seeds", type=int, default=3, help="seeds that retrain default and best")
    parser.add_argument("--data-dir", help="folder that holds M4/ (default: $XLSTM_TS_DATA, else ../shared/datasets)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    train, _ = read_m4("Hourly", data_dir(args.data_dir))
    ids = np.sort(np.random.default_rng(args.seed).choice(train.unique_id.unique(), args.series, replace=False))
    df = train[train.unique_id.isin(ids)].reset_index(drop=True)
    cut = df.groupby("unique_id").cumcount(ascending=False) >= HORIZON  # drop each series' validation window
    groups = [g.y.to_numpy(np.float64) for _, g in df.groupby("unique_id", sort=False)]
    history = [v[:-HORIZON] for v in groups]
    actual = np.stack([v[-HORIZON:] for v in groups])
    row = {"n_series": args.series, "horizon": HORIZON, "season": SEASON, "seed": args.seed,
           "series_ids": [str(i) for i in ids], "steps_per_trial": args.max_steps,
           "val_check_steps": args.val_check_steps, "pruner": args.pruner, "torch_threads": torch.get_num_threads()}
    row["seasonal_naive_mase"] = mase(actual, seasonal_naive(history, HORIZON, SEASON), history, SEASON)

    start = time.perf_counter()
    shipped = XLSTMForecaster(prediction_length=HORIZON, random_state=args.seed).fit(df[cut])
    pred = shipped.predict()["mean"].to_numpy().reshape(len(groups), HORIZON)
    row["default_shipped_mase"] = mase(actual, pred, history, SEASON)
    row["default_shipped_seconds"] = round(time.perf_counter() - start, 1)
    print(f"default (as shipped): MASE {row['default_shipped_mase']:.4f}", flush=True)

    common = dict(prediction_length=HORIZON, max_steps=args.max_steps, val_check_steps=args.val_check_steps,
                  random_state=args.seed, metric="mase", refit=False)
    start = time.perf_counter()
    default = tune(df, n_trials=1, search_space=lambda trial: {}, pruner="none", **common)
    row["default_protocol_mase"] = default.study.best_value
    row["default_protocol_seconds"] = round(time.perf_counter() - start, 1)
    print(f"default (trial protocol): MASE {row['default_protocol_mase']:.4f}", flush=True)

    start = time.perf_counter()
    tuned = tune(df, n_trials=args.trials, search_space=space, pruner=args.pruner, **common)
    row["tune_seconds"] = round(time.perf_counter() - start, 1)
    states = [t.state.name for t in tuned.study.trials]
    complete = [t.value for t in tuned.study.trials if t.state.name == "COMPLETE"]
    row.update(tuned_mase=tuned.study.best_value, tuned_median_complete_mase=float(np.median(complete)),
               trials=len(states), complete=states.count("COMPLETE"), pruned=states.count("PRUNED"),
               best_trial=tuned.study.best_trial.number, best_params=tuned.study.best_params,
               device=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
               date=time.strftime("%Y-%m-%d"), commit=commit())
    row["improvement_vs_protocol"] = 1 - row["tuned_mase"] / row["default_protocol_mase"]
    row["improvement_vs_shipped"] = 1 - row["tuned_mase"] / row["default_shipped_mase"]
    print(f"tuned: MASE {row['tuned_mase']:.4f} ({row['complete']} complete, {row['pruned']} pruned)", flush=True)

    # the best trial also won a draw of weights and windows: train both configurations again with other seeds
    best_space = space(optuna.trial.FixedTrial(tuned.study.best_params))
    seeds = list(range(args.seed + 1, args.seed + 1 + args.check_seeds))
    for name, chosen in (("default", {}), ("tuned", best_space)):
        scores = [tune(df, n_trials=1, search_space=lambda trial, chosen=chosen: chosen, pruner="none",
                       **{**common, "random_state": seed}).study.best_value for seed in seeds]
        row[f"{name}_other_seeds"] = {"seeds": seeds, "mase": scores}
        print(f"{name} with seeds {seeds}: MASE {np.mean(scores):.4f} +- {np.std(scores):.4f}", flush=True)
    write(row, Path(args.out))


def write(row: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune_m4.json").write_text(json.dumps(row, indent=1) + "\n")
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["best_params"].items())
    lines = [
        "# Tuning on M4 Hourly vs the default forecaster", "",
        f"Written by `benchmarks/tune_m4.py` on {row['date']} (commit {row['commit']}), {row['device']}. "
        f"{row['n_series']} M4 Hourly series (seed {row['seed']}, ids in tune_m4.json), official training part only; "
        f"validation window: the last {row['horizon']} steps of each training series; MASE with season "
        f"{row['season']}. The M4 test part is not used.", "",
        "| model | validation MASE | trials | seconds |", "|---|---|---|---|",
        f"| seasonal naive | {row['seasonal_naive_mase']:.4f} | - | - |",
        f"| default forecaster, as shipped (200 steps, no validation tail) | {row['default_shipped_mase']:.4f} | - "
        f"| {row['default_shipped_seconds']} |",
        f"| default forecaster, trial protocol ({row['steps_per_trial']} steps, best of validations every "
        f"{row['val_check_steps']}) | {row['default_protocol_mase']:.4f} | 1 | {row['default_protocol_seconds']} |",
        f"| tuned, best trial (#{row['best_trial']}) | **{row['tuned_mase']:.4f}** | {row['trials']} "
        f"({row['complete']} complete, {row['pruned']} pruned, {row['pruner']}) | {row['tune_seconds']} |",
        f"| tuned, median of complete trials | {row['tuned_median_complete_mase']:.4f} | | |",
        *[f"| {label}, trial protocol, seeds {', '.join(map(str, r['seeds']))} | {np.mean(r['mase']):.4f} ± "
          f"{np.std(r['mase']):.4f} ({', '.join(f'{v:.4f}' for v in r['mase'])}) | | |"
          for label, r in (("default", row["default_other_seeds"]), ("tuned best parameters",
                                                                     row["tuned_other_seeds"]))], "",
        f"Improvement of the best trial: {100 * row['improvement_vs_protocol']:.1f} % vs the default under the trial "
        f"protocol, {100 * row['improvement_vs_shipped']:.1f} % vs the default as shipped. The best trial is the "
        "minimum over the trials on the same window, so its score is optimistic by selection; the median of the "
        "complete trials shows the spread, and the last two rows train the default and the best parameters again "
        "with other seeds (weights and training windows), which removes the luck of the seed but not the choice "
        "of the window.", "", f"Best parameters: {params}.",
    ]
    (out / "tune_m4.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'tune_m4.md'} and {out / 'tune_m4.json'}")


if __name__ == "__main__":
    main()
