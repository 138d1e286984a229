"""Rolling-origin backtest on the embedded synthetic panel: per-window metrics and a plot.

Run from the repository root:  python examples/backtest.py [--out outputs] [--max-steps 300]
"""

import argparse
from pathlib import Path

from xlstm_ts import XLSTMForecaster, metrics
from xlstm_ts.datasets import make_synthetic_panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs")
    parser.add_argument("--max-steps", type=int, default=300)
    args = parser.parse_args()

    horizon = 24
    df = make_synthetic_panel(n_series=6, length=720, freq="h", seed=1)
    model = XLSTMForecaster(prediction_length=horizon, context_length=168, quantiles=(0.1, 0.5, 0.9),
                            model="small", max_steps=args.max_steps, random_state=0)
    cv = model.cross_validation(df, n_windows=4, step_size=horizon)  # one fit before the first cutoff

    print("cutoff               MAE     wQL     80% coverage")
    for cutoff, window in cv.groupby("cutoff"):
        y = window["y"].to_numpy()[:, None]
        q = window[["q0.1", "q0.5", "q0.9"]].to_numpy()[:, None, :]
        print(f"{cutoff}  {metrics.mae(window['y'], window['mean']):.4f}  "
              f"{metrics.weighted_quantile_loss(y, q, (0.1, 0.5, 0.9)):.4f}  "
              f"{metrics.coverage(window['y'], window['q0.1'], window['q0.9']):.1%}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cv.to_csv(out / "backtest.csv", index=False)
    try:
        import matplotlib

        matplotlib.use("Agg")
        from xlstm_ts.plotting import plot_cross_validation
    except ImportError:
        return
    plot_cross_validation(cv, max_series=3).savefig(out / "backtest.png", dpi=100)
    print(f"wrote {out / 'backtest.csv'} and {out / 'backtest.png'}")


if __name__ == "__main__":
    main()
