"""Hyperparameter search on ETTh1 (or, without the data files, the embedded synthetic panel): an SQLite study that
resumes, a median pruner that stops bad trials early, the best parameters, a forecast from the model refit with them,
and the study history as a plot.

Run from the repository root:  python examples/tuning.py [--out outputs] [--n-trials 12] [--max-steps 150]
                                   [--data auto|etth1|synthetic] [--columns OT|all]
ETTh1 is read with `xlstm_ts.datasets.read_ett` from $XLSTM_TS_DATA, else from ../shared/datasets. Only its training
rows (0:8640 of the standard split) are used, so its validation and test months stay unseen; the search scores the
last 4 days of those rows. --columns OT tunes on the target alone, all on the 7 variates as 7 series. With --data auto
(the default) the synthetic panel stands in when the files are missing.
Needs the [tune] extra. Run it again with a larger --n-trials to continue the same study (OUT/tuning.db); copies
started together on one storage share the study. With matplotlib, the study history goes to OUT/tuning_history.png.
"""

import argparse
import os
from pathlib import Path

import pandas as pd

from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel, read_ett, wide_to_long

SMOKE = os.environ.get("XLSTM_TS_SMOKE") == "1"  # tiny budget for automated runs
ROOT = Path(__file__).resolve().parents[1]
ETT_TRAIN_ROWS = 8640


def search_space(trial) -> dict:
    """Forecaster parameters for one trial; "model" holds ModelConfig fields, the rest go to XLSTMForecaster."""
    return {
        "context_length_multiplier": trial.suggest_int("context_length_multiplier", 2, 7),
        "model": {
            "embed_dim": trial.suggest_categorical("embed_dim", [16, 32, 64]),
            "pattern": trial.suggest_categorical("pattern", ["m", "mm", "ms"]),
            "patch_length": trial.suggest_categorical("patch_length", [8, 12, 24]),
        },
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True),  # the top end often diverges
    }


def load_data(choice: str, columns: str) -> tuple[pd.DataFrame, str, int]:
    """The long frame to tune on, the study name, and the number of validation windows."""
    if choice != "synthetic":
        data_dir = os.environ.get("XLSTM_TS_DATA") or ROOT.parent / "shared" / "datasets"
        try:
            wide = read_ett("ETTh1", data_dir)
        except (ValueError, FileNotFoundError) as err:
            if choice == "etth1":
                raise SystemExit(f"--data etth1 needs ETT/ETTh1.csv[.gz]: {err}") from err
            print(f"ETTh1 not found ({err}); tuning on the synthetic panel instead")
        else:
            wide = wide.iloc[ETT_TRAIN_ROWS - 720 if SMOKE else 0:ETT_TRAIN_ROWS]  # training rows only
            df = wide_to_long(wide, "date", None if columns == "all" else ["OT"])
            print(f"tuning on ETTh1 ({columns}): {df.unique_id.nunique()} series x {len(wide)} hourly rows")
            return df, f"etth1-{columns}", 4
    print("tuning on the synthetic panel: 4 series x 480 hourly rows")
    return make_synthetic_panel(n_series=4, length=480, freq="h", seed=2), "synthetic-hourly", 1


def plot_history(study, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = [min(t.value for t in done[: i + 1]) for i in range(len(done))]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="complete trial")
    ax.step([t.number for t in done], best, where="post", label="best so far")
    for t in study.trials:
        if t.state.name == "PRUNED":
            ax.axvline(t.number, color="0.85", zorder=0)
    ax.set(xlabel="trial (grey: pruned)", ylabel="validation MASE", title=study.study_name)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs", help="folder for tuning.db and tuning_history.png")
    parser.add_argument("--n-trials", type=int, default=2 if SMOKE else 12, help="finished trials in the study")
    parser.add_argument("--max-steps", type=int, default=4 if SMOKE else 150, help="training steps per trial")
    parser.add_argument("--data", choices=["auto", "etth1", "synthetic"], default="auto")
    parser.add_argument("--columns", choices=["OT", "all"], default="OT", help="ETTh1: the target or all variates")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    horizon = 24
    df, name, n_windows = load_data(args.data, args.columns)
    result = tune(df, horizon, n_trials=args.n_trials, search_space=search_space, n_windows=n_windows,
                  storage=f"sqlite:///{out / 'tuning.db'}", study_name=name, pruner="median",
                  metric="mase", max_steps=args.max_steps, val_check_steps=max(args.max_steps // 6, 1),
                  random_state=0, base_params={"model": "tiny", "batch_size": 8 if SMOKE else 32})

    study = result.study
    states = [t.state.name for t in study.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    print(f"best validation MASE {study.best_value:.3f} (trial {study.best_trial.number}) with")
    for param, value in study.best_params.items():
        print(f"  {param} = {value}")
    forecast = result.forecaster.predict()  # refit on all of df with the best parameters
    print(forecast.head(3).to_string(index=False))
    plot_history(study, out / "tuning_history.png")


if __name__ == "__main__":
    main()
