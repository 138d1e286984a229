"""Main job: forecast the embedded synthetic panel, compare with seasonal naive, write a CSV, a plot and the model.

Run from the repository root:  python examples/quickstart.py [--out outputs] [--max-steps 400]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs", help="folder for forecast.csv and forecast.png")
    parser.add_argument("--max-steps", type=int, default=400, help="training steps")
    args = parser.parse_args()

    horizon, season = 24, 24
    df = make_synthetic_panel(n_series=8, length=720, freq="h", seed=0)  # 30 days of hourly data per series
    is_test = df.groupby("unique_id").cumcount(ascending=False) < horizon
    train, test = df[~is_test], df[is_test]

    start = time.perf_counter()
    model = XLSTMForecaster(prediction_length=horizon, context_length=7 * season, quantiles=(0.1, 0.5, 0.9),
                            model="small", max_steps=args.max_steps, batch_size=64, random_state=0)
    model.fit(train)
    forecast = model.predict()
    seconds = time.perf_counter() - start

    scored = forecast.merge(test, on=["unique_id", "ds"], how="left")
    naive = train.groupby("unique_id").tail(season).copy()  # seasonal naive: repeat the last day
    naive["ds"] = naive["ds"] + pd.Timedelta(hours=horizon)
    scored = scored.merge(naive.rename(columns={"y": "naive"})[["unique_id", "ds", "naive"]], on=["unique_id", "ds"])
    mae = np.mean(np.abs(scored["mean"] - scored["y"]))
    mae_naive = np.mean(np.abs(scored["naive"] - scored["y"]))
    coverage = np.mean((scored["y"] >= scored["q0.1"]) & (scored["y"] <= scored["q0.9"]))

    print(forecast.head(6).to_string(index=False))
    print(f"\nfit + predict: {seconds:.1f} s on CPU, {len(forecast)} forecast rows")
    print(f"test MAE  xlstm_ts: {mae:.4f}   seasonal naive: {mae_naive:.4f}   ratio: {mae / mae_naive:.3f}")
    print(f"80% interval coverage: {coverage:.1%}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scored.to_csv(out / "forecast.csv", index=False)
    model.save(out / "model")  # reload with XLSTMForecaster.load(out / "model")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out / 'forecast.csv'} (install matplotlib for the plot)")
        return
    ids = forecast["unique_id"].unique()[:4]
    fig, axes = plt.subplots(len(ids), 1, figsize=(10, 2.4 * len(ids)), sharex=False)
    for ax, uid in zip(np.atleast_1d(axes), ids):
        hist = train[train.unique_id == uid].tail(4 * season)
        fc = scored[scored.unique_id == uid]
        ax.plot(hist.ds, hist.y, color="black", lw=1, label="history")
        ax.plot(fc.ds, fc.y, color="black", lw=1, ls="--", label="actual")
        ax.fill_between(fc.ds, fc["q0.1"], fc["q0.9"], alpha=0.3, label="80% interval")
        ax.plot(fc.ds, fc["mean"], lw=1.5, label="forecast")
        ax.set_title(str(uid), fontsize=9)
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(out / "forecast.png", dpi=100)
    print(f"wrote {out / 'forecast.csv'} and {out / 'forecast.png'}")


if __name__ == "__main__":
    main()
