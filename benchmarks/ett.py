"""ETT long-horizon benchmark (standard protocol) with two baselines computed in the same run.

Protocol: standard split (ETTh: train rows 0:8640, val 8640:11520, test 11520:14400; ETTm x4), a StandardScaler
fitted on the training rows only, channel-independent training (each of the 7 variates is a series), metrics on the
scaled data over every test window (stride 1, nothing dropped) and all variates.

The forecaster trains on the training rows and keeps the weights with the lowest loss on the validation split.
Baselines: repeat-last-value, and a linear model of the lookback (least squares from the L context values to the H
targets, shared by all variates, fitted on every training window).

Usage:
    XLSTM_TS_DATA=path/to/datasets python benchmarks/ett.py --dataset ETTh1 --horizon 96 --lookback 336
Appends a row per method to benchmarks/results/ett.csv and rewrites benchmarks/results/ett.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import read_ett, sliding_windows, wide_to_long
from xlstm_ts.datasets.ltsf import FIXED_BORDERS, fit_linear_lookback, linear_lookback, standard_scaler

from provenance import add_accelerator_option, commit_id, device_name

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = {"h": FIXED_BORDERS["ett-hourly"], "m": FIXED_BORDERS["ett-minute"]}


def split_rows(name: str) -> tuple[int, int, int]:
    return SPLITS["m" if name.startswith("ETTm") else "h"]


def scaled_values(name: str, data_dir: str | None) -> tuple[np.ndarray, pd.DatetimeIndex, list[str]]:
    """(rows, 7) values standardized with train-row statistics, plus dates and column names."""
    wide = read_ett(name, data_dir)
    cols = [c for c in wide.columns if c != "date"]
    values = wide[cols].to_numpy(np.float64)
    train_end = split_rows(name)[0]
    mean, scale = standard_scaler(values, train_end)
    return ((values - mean) / scale).astype(np.float32), pd.DatetimeIndex(wide["date"]), cols


def metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    err = pred.astype(np.float64) - true
    return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}


def linear_baseline(values: np.ndarray, L: int, H: int, train_end: int, test_past: np.ndarray) -> np.ndarray:
    return linear_lookback(test_past, fit_linear_lookback(values, train_end, L, H))  # every training window


def write_markdown(csv_path: Path) -> None:
    table = pd.read_csv(csv_path)
    lines = ["# ETT long-horizon results", "",
             "Standard split, train-only StandardScaler, MSE/MAE on scaled data over every test window and variate.",
             "Baselines are computed in the same run as the model. Rows are appended by `benchmarks/ett.py`.", "",
             "| dataset | H | L | method | MSE | MAE | test windows | steps | train s | device | seed | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.dataset} | {r.horizon} | {r.lookback} | {r.method} | {r.mse:.4f} | {r.mae:.4f} | "
                     f"{r.n_test_windows} | {r.steps} | {r.train_seconds:.0f} | {r.device} | {r.seed} | {r.commit} |")
    (csv_path.parent / "ett.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ETTh1", choices=["ETTh1", "ETTh2", "ETTm1", "ETTm2"])
    parser.add_argument("--data-dir", default=None, help="data directory (default: $XLSTM_TS_DATA)")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--lookback", type=int, default=336)
    parser.add_argument("--model", default="ltsf", help="model preset name or YAML path")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.5],
                        help="quantile levels; the median is the point forecast scored by MSE/MAE")
    parser.add_argument("--head", default="quantile", choices=["quantile", "normal", "student_t", "negative_binomial"])
    parser.add_argument("--val-check-steps", type=int, default=200)
    parser.add_argument("--patience", type=int, default=5, help="validations without improvement before stopping")
    parser.add_argument("--seed", type=int, default=0)
    add_accelerator_option(parser)
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to results/")
    args = parser.parse_args()

    L, H = args.lookback, args.horizon
    values, dates, cols = scaled_values(args.dataset, args.data_dir)
    train_end, val_end, test_end = split_rows(args.dataset)
    test_past, test_future = sliding_windows(values, L, H, val_end, test_end)  # (N * C, L), (N * C, H)
    n_windows = test_end - val_end - H + 1
    assert len(test_past) == n_windows * len(cols)

    results = {"repeat_last": metrics(np.repeat(test_past[:, -1:], H, axis=1), test_future)}
    start = time.perf_counter()
    results["linear_lookback"] = metrics(linear_baseline(values, L, H, train_end, test_past), test_future)
    linear_seconds = time.perf_counter() - start

    # train + validation rows; the forecaster trains on targets before val_end - val_size = train_end and selects
    # its weights on every validation window (the standard validation split)
    fit_rows = pd.DataFrame(values[:val_end], columns=cols).assign(date=dates[:val_end])
    train = wide_to_long(fit_rows)
    model = XLSTMForecaster(prediction_length=H, context_length=L, quantiles=tuple(args.quantiles), head=args.head,
                            model=args.model,
                            max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                            random_state=args.seed, val_size=val_end - train_end, val_check_steps=args.val_check_steps,
                            early_stopping_patience=args.patience, trainer_kwargs={"accelerator": args.accelerator})
    start = time.perf_counter()
    model.fit(train)
    train_seconds = time.perf_counter() - start
    results["xlstm_ts"] = metrics(model.predict_array(test_past)["mean"], test_future)

    device = device_name(args.accelerator)
    seconds = {"repeat_last": 0.0, "linear_lookback": linear_seconds, "xlstm_ts": train_seconds}
    best_step = args.max_steps if model.best_step_ is None else model.best_step_
    steps = {"repeat_last": 0, "linear_lookback": 0, "xlstm_ts": best_step}
    rows = [dict(dataset=args.dataset, horizon=H, lookback=L, method=m, mse=r["mse"], mae=r["mae"],
                 n_test_windows=n_windows, steps=steps[m], train_seconds=seconds[m], device=device, seed=args.seed,
                 model=f"{args.model}/{args.head}" if m == "xlstm_ts" else "", commit=commit_id())
            for m, r in results.items()]
    print(json.dumps(rows, indent=1))
    if not args.no_record:
        RESULTS.mkdir(exist_ok=True)
        csv_path = RESULTS / "ett.csv"
        pd.DataFrame(rows).to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
        write_markdown(csv_path)


if __name__ == "__main__":
    main()
