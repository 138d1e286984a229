"""Command line: `python -m xlstm_ts fit|predict|cv|tune ...` over CSV or parquet long frames."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from xlstm_ts.cli_tune import add_tune_options, run_tune
from xlstm_ts.forecaster import XLSTMForecaster
from xlstm_ts.heads import HEADS
from xlstm_ts.metrics import coverage, mae, mse, weighted_quantile_loss
from xlstm_ts.training_utils import quantile_column


def read_frame(path: str) -> pd.DataFrame:
    """A long frame from .csv, .csv.gz or .parquet."""
    if not Path(path).is_file():
        raise SystemExit(f"error: data file {path!r} does not exist")
    return pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)


def read_optional(path: str | None) -> pd.DataFrame | None:
    return None if path is None else read_frame(path)


def covariate_params(args: argparse.Namespace) -> dict:
    """The forecaster's covariate column parameters from --past/--future/--static-covariates."""
    return {"past_covariates": args.past_covariates, "future_covariates": args.future_covariates,
            "static_covariates": args.static_covariates}


def write_frame(frame: pd.DataFrame, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    frame.to_csv(path, index=False)
    return path


def _forecaster(args: argparse.Namespace) -> XLSTMForecaster:
    return XLSTMForecaster(
        prediction_length=args.horizon, context_length=args.context, quantiles=tuple(args.quantiles),
        head=args.head, model=args.config, max_steps=args.max_steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, random_state=args.seed, id_col=args.id_col, time_col=args.time_col,
        target_col=args.target_col, val_size=args.val_size, verbose=args.verbose,
        trainer_kwargs={"accelerator": args.accelerator}, **covariate_params(args),
    )


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small",
                        help="model preset name from configs/model (tiny, small, base, ...) or a YAML path")
    parser.add_argument("--data", required=True, help="long frame: .csv, .csv.gz or .parquet")
    parser.add_argument("--out", default="outputs", help="output directory")
    parser.add_argument("--horizon", type=int, default=24, help="prediction_length: steps to forecast")
    parser.add_argument("--seed", type=int, default=0, help="random_state")
    parser.add_argument("--id-col", default="unique_id", help="series id column")
    parser.add_argument("--time-col", default="ds", help="timestamp column")
    parser.add_argument("--target-col", default="y", help="target column")
    parser.add_argument("--accelerator", default="cpu", help="lightning accelerator: cpu, gpu, auto")
    parser.add_argument("--past-covariates", nargs="+", metavar="COL",
                        help="columns of --data known only up to each series' end (NaN: missing)")
    parser.add_argument("--future-covariates", nargs="+", metavar="COL",
                        help="columns of --data known ahead; forecasts need their next --horizon values "
                             "(--futr-data)")
    parser.add_argument("--static-covariates", nargs="+", metavar="COL",
                        help="one value per series: columns of --static-data, or of --data when constant per series")
    parser.add_argument("--static-data", default=None, help="static covariates, one row per series (id column + "
                                                            "the columns): .csv, .csv.gz or .parquet")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    _add_common_options(parser)
    parser.add_argument("--context", type=int, default=None, help="context_length (default: 4 x horizon)")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.1, 0.5, 0.9], help="quantile levels")
    parser.add_argument("--head", default="quantile", choices=HEADS)
    parser.add_argument("--max-steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--val-size", type=int, default=0, help="validation tail per series (0: none)")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xlstm_ts", description="xLSTM forecasting from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train on a long frame; save the model and its forecast to --out")
    _add_training_options(fit)
    fit.add_argument("--futr-data", default=None,
                     help="future covariate values for the forecast written after fitting (id, time and the "
                          "--future-covariates columns over the next --horizon steps); without it a model with "
                          "future covariates writes future_frame.csv to fill and pass to `predict --futr-data`")
    predict = sub.add_parser("predict", help="forecast with a saved model")
    predict.add_argument("--model-dir", required=True, help="directory written by `fit` (OUT/model)")
    predict.add_argument("--data", default=None, help="context frame (default: the series seen in fit)")
    predict.add_argument("--out", default="outputs", help="output directory")
    predict.add_argument("--futr-data", default=None,
                         help="future covariate values over the horizon (fill the future_frame.csv that fit wrote)")
    predict.add_argument("--static-data", default=None, help="static covariates, one row per series")
    cv = sub.add_parser("cv", help="rolling-origin backtest; writes the windows and a metrics summary to --out")
    _add_training_options(cv)
    cv.add_argument("--n-windows", type=int, default=3, help="backtest windows per series")
    cv.add_argument("--step-size", type=int, default=None, help="steps between cutoffs (default: horizon)")
    cv.add_argument("--refit", action="store_true", help="refit at every cutoff")
    search = sub.add_parser("tune", help="Optuna hyperparameter search (extra [tune]); writes best_params.json to "
                                         "--out; workers sharing --storage and --study-name share the study")
    _add_common_options(search)
    add_tune_options(search)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    static_df = read_optional(args.static_data)
    if args.command == "fit":
        model = _forecaster(args).fit(read_frame(args.data), static_df)
        model.save(out / "model")
        futr_df = read_optional(args.futr_data)
        if model.covariates_.future and futr_df is None:
            path = write_frame(model.make_future_frame(), out, "future_frame.csv")
            print(f"saved model to {out / 'model'}; it has future covariates: fill {path} and run `python -m "
                  f"xlstm_ts predict --model-dir {out / 'model'} --futr-data {path}`")
            return 0
        path = write_frame(model.predict(futr_df=futr_df, static_df=static_df), out, "forecast.csv")
        print(f"saved model to {out / 'model'}, forecast to {path}")
    elif args.command == "predict":
        model = XLSTMForecaster.load(args.model_dir)
        forecast = model.predict(read_optional(args.data), futr_df=read_optional(args.futr_data), static_df=static_df)
        print(f"forecast written to {write_frame(forecast, out, 'forecast.csv')}")
    elif args.command == "tune":
        run_tune(args, read_frame(args.data), static_df)
    else:
        model = _forecaster(args)
        cv = model.cross_validation(read_frame(args.data), args.n_windows, args.step_size, args.refit, static_df)
        write_frame(cv, out, "cv.csv")
        levels = model.levels_
        cols = [quantile_column(level) for level in levels]
        summary = {"mae": mae(cv["y"], cv["mean"]), "mse": mse(cv["y"], cv["mean"]),
                   "wql": weighted_quantile_loss(cv["y"].to_numpy()[:, None], cv[cols].to_numpy()[:, None, :],
                                                 levels)}
        if len(levels) >= 2:
            summary[f"coverage_{cols[0]}_{cols[-1]}"] = coverage(cv["y"], cv[cols[0]], cv[cols[-1]])
        (out / "cv_metrics.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
