"""Hyperparameter search on the embedded synthetic panel: an SQLite study that resumes, a median pruner that stops
bad trials early, the best parameters, and a forecast from the model refit with them.

Run from the repository root:  python examples/tuning.py [--out outputs] [--n-trials 12] [--max-steps 150]
Needs the [tune] extra. Run it again with a larger --n-trials to continue the same study (OUT/tuning.db); copies
started together on one storage share the study. With matplotlib, the study history goes to OUT/tuning_history.png.
"""

import argparse
import os
from pathlib import Path

from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel

SMOKE = os.environ.get("XLSTM_TS_SMOKE") == "1"  # tiny budget for automated runs


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
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs", help="folder for tuning.db and tuning_history.png")
    parser.add_argument("--n-trials", type=int, default=2 if SMOKE else 12, help="finished trials in the study")
    parser.add_argument("--max-steps", type=int, default=4 if SMOKE else 150, help="training steps per trial")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    horizon = 24
    df = make_synthetic_panel(n_series=4, length=480, freq="h", seed=2)
    result = tune(df, horizon, n_trials=args.n_trials, search_space=search_space,
                  storage=f"sqlite:///{out / 'tuning.db'}", study_name="synthetic-hourly", pruner="median",
                  metric="mase", max_steps=args.max_steps, val_check_steps=max(args.max_steps // 6, 1),
                  random_state=0, base_params={"model": "tiny", "batch_size": 8 if SMOKE else 32})

    study = result.study
    states = [t.state.name for t in study.trials]
    print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
    print(f"best validation MASE {study.best_value:.3f} (trial {study.best_trial.number}) with")
    for name, value in study.best_params.items():
        print(f"  {name} = {value}")
    forecast = result.forecaster.predict()  # refit on all of df with the best parameters
    print(forecast.head(3).to_string(index=False))
    plot_history(study, out / "tuning_history.png")


if __name__ == "__main__":
    main()
