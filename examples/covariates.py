"""Covariates: planned promotions and a temperature forecast, known ahead, drive the target. The same forecaster is fit
without and with them; the test MAE shows what knowing the future is worth.

Run from the repository root:  python examples/covariates.py [--out outputs] [--max-steps 300]
XLSTM_TS_SMOKE=1 runs a tiny budget (automated runs).
"""

import argparse
import os
from pathlib import Path

import numpy as np

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_covariate_panel

SMOKE = os.environ.get("XLSTM_TS_SMOKE") == "1"  # tiny budget for automated runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs", help="folder for covariates_forecast.csv and the saved model")
    parser.add_argument("--max-steps", type=int, default=10 if SMOKE else 300, help="training steps")
    args = parser.parse_args()

    horizon = 24
    # columns: unique_id, ds, y, promo (0/1), temperature, store_size (static number), region (static text)
    df = make_covariate_panel(n_series=4 if SMOKE else 8, length=360 if SMOKE else 720, freq="h", seed=0)
    is_test = df.groupby("unique_id").cumcount(ascending=False) < horizon
    train, test = df[~is_test], df[is_test]
    common = dict(prediction_length=horizon, context_length=96, model="tiny" if SMOKE else "small",
                  max_steps=args.max_steps, batch_size=32 if SMOKE else 64, random_state=0)

    # without covariates: the target alone (the covariate columns of the frame are ignored)
    plain = XLSTMForecaster(**common).fit(train)
    forecast_plain = plain.predict()

    # with covariates: promo and temperature are known over the horizon, store size and region per store
    model = XLSTMForecaster(**common, future_covariates=["promo", "temperature"],
                            static_covariates=["store_size", "region"]).fit(train)
    futr_df = model.make_future_frame()  # unique_id, ds of the next 24 hours; promo, temperature NaN to fill
    plan = test[["unique_id", "ds", "promo", "temperature"]]  # the promotion plan and the weather forecast
    futr_df = futr_df[["unique_id", "ds"]].merge(plan, on=["unique_id", "ds"], how="left")
    forecast = model.predict(futr_df=futr_df)

    without = forecast_plain[["unique_id", "ds", "mean"]].rename(columns={"mean": "mean_without"})
    scored = forecast.merge(without, on=["unique_id", "ds"]).merge(test[["unique_id", "ds", "y", "promo"]],
                                                                   on=["unique_id", "ds"])
    mae_with = np.mean(np.abs(scored["mean"] - scored["y"]))
    mae_without = np.mean(np.abs(scored["mean_without"] - scored["y"]))
    on_promo = scored["promo"] > 0
    print(f"test MAE without covariates: {mae_without:.4f}")
    print(f"test MAE with covariates:    {mae_with:.4f}   ({1 - mae_with / mae_without:.0%} lower)")
    if on_promo.any():
        print(f"  during promotions: {np.mean(np.abs(scored['mean_without'] - scored['y'])[on_promo]):.4f} -> "
              f"{np.mean(np.abs(scored['mean'] - scored['y'])[on_promo]):.4f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scored.to_csv(out / "covariates_forecast.csv", index=False)
    model.save(out / "covariates_model")  # keeps the covariate setup and the last context of the covariates
    print(f"wrote {out / 'covariates_forecast.csv'} and {out / 'covariates_model'}")


if __name__ == "__main__":
    main()
