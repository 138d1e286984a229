"""Long-horizon (LTSF) benchmark on any CSV in the ETT/Autoformer layout, with three baselines from the same run.

Protocol (`xlstm_ts.datasets.ltsf`): ETT split borders or 0.7/0.1/0.2, a StandardScaler fitted on the training rows
only, MSE/MAE on the scaled data over every test window (stride 1, nothing dropped), every step and every variate.

Mode `channel_independent`: each variate is one series of a panel, the network weights are shared (PatchTST style).
Mode `variate_mixing` (preset `ltsf_mixing`): the variates are forecast together, an xLSTM stack runs across them.
Per seed the forecaster trains on targets in the training rows, scores every validation window every
`--val-check-steps` steps and keeps the weights with the lowest validation loss; with the default `--head quantile`
it predicts the median (one quantile, pinball loss), with `--head mse` the mean (squared error). Baselines, recorded
as modes `baseline:repeat_last`, `baseline:linear` and `baseline:linear_centred`:
the last context value repeated, a least-squares linear map from the lookback to the horizon shared by all variates
and fitted on every training window, and the same map fitted and applied with each window centred on its context
mean (the forecaster's 'center' scaling without the network). Baseline rows have no seed and no epochs; `--seeds`
with no value runs the baselines only.

With `--ensemble K` (or a run preset's `ensemble`) each seed trains K forecasters, member j with random state
seed + 1000 j, and scores the mean of their point forecasts; the row's train seconds are the members' sum.
`--ensemble-lookbacks 336 512` trains those K members at each of the lookbacks (as N-BEATS ensembles over lookback
lengths): the scored windows are the longest lookback's, each member reads the last steps of its own, and every
lookback sees the same test targets; the `lookback` column records the longest.

`epochs` is the optimizer step of the selected weights times the batch size divided by the number of standard
training windows (variates x (training rows - lookback - horizon + 1)); the sampler also draws windows whose
context starts before row 0 (padded and masked), so this counts passes in units of the standard training set.

Usage:
    python benchmarks/ltsf.py --preset etth1_96 --seeds 0 1 2 --data-dir ../shared/datasets
    python benchmarks/ltsf.py --data ../shared/datasets/ETT/ETTh1.csv.gz --split ett-hourly --horizon 96 \\
        --lookback 336 --seeds 0 1 2
A run preset (`configs/ltsf/<name>.yaml`, `xlstm_ts.datasets.ltsf_presets`) sets the file, split, horizon, lookback,
model preset, model fields and training budget; a flag given on the command line overrides its value. The `preset`
column records `<run preset>/<model preset>`, then in brackets the training settings that differ from a run preset's
defaults (`LTSFRunConfig`'s, e.g. `(max_steps 6000)`, `LABELLED_SETTINGS`; without a run preset: from `DEFAULTS`),
whether the preset or a flag set them, the model fields the preset or `--model-set` changed (e.g.
`(embed_dim 32, dropout 0.1)`), the time limit, the head other than 'quantile', the precision and the speed flags:
the same settings give the same label however they were given. Appends rows to benchmarks/results/ltsf.csv and
rewrites benchmarks/results/ltsf.md (see --results-dir).
`benchmarks/ltsf_sweep.py` runs many presets and seeds in parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from xlstm_ts import XLSTMForecaster
from xlstm_ts.config import resolve_config
from xlstm_ts.datasets import wide_to_long
from xlstm_ts.datasets.ltsf import (
    SPLITS,
    LTSFData,
    fit_linear_lookback,
    linear_lookback,
    load_ltsf,
    n_windows,
    repeat_last,
    score_windows,
    split_windows,
)
from xlstm_ts.datasets.ltsf_presets import (
    MODEL_SETTING_NAMES,
    LTSFRunConfig,
    load_run_config,
    resolve_data_path,
    run_preset_name,
)
from xlstm_ts.heads import HEADS

from ltsf_report import ANCHOR_MODELS, ANCHORS, HORIZONS, anchor, mean_std, write_markdown  # noqa: F401
from provenance import add_accelerator_option, commit_id, device_name

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("channel_independent", "variate_mixing")
"""Multivariate modes of the forecaster; each is recorded in the `mode` column."""
COLUMNS = ["dataset", "horizon", "lookback", "mode", "seed", "mse", "mae", "n_test_windows", "epochs",
           "train_seconds", "device", "commit", "preset"]
DEFAULTS = dict(horizon=96, lookback=336, model="ltsf", max_steps=3000, batch_size=128, learning_rate=1e-4,
                val_check_steps=200, patience=5, head="quantile", ema_decay=None, weight_decay=1e-4, ensemble=1)
"""Values of the run settings when neither the command line nor a run preset gives them."""
LABELLED_SETTINGS = ("batch_size", "learning_rate", "max_steps", "val_check_steps", "patience", "ema_decay",
                     "weight_decay", "ensemble")
"""Training settings that, with a value other than `LTSFRunConfig`'s default (without a run preset: `DEFAULTS`'), are
named in the `preset` column, so a row says how to reproduce it (horizon and lookback have columns of their own;
the model preset, model fields, head and time limit are labelled as well)."""
MEMBER_SEED_STRIDE = 1000
"""Member j of an ensemble trains with random state seed + MEMBER_SEED_STRIDE * j (member 0: the seed itself)."""
PRESET_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LTSFRunConfig)
                   if f.default is not dataclasses.MISSING}
"""The values a run preset's settings are labelled against: the training settings of a preset that names none."""


def parse_model_setting(text: str) -> tuple[str, object]:
    """'embed_dim=32' -> ('embed_dim', 32): a `ModelConfig` field and its value, read as YAML."""
    names = list(MODEL_SETTING_NAMES)
    key, sep, value = text.partition("=")
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {names} ('mode' has --mode), "
                                         f"got {text!r}; e.g. --model-set embed_dim=32 dropout=0.1")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"could not read the value of {text!r} as YAML ({err}).") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"Settings that neither a flag nor --preset gives: {DEFAULTS}")
    parser.add_argument("--preset", help="run preset name (configs/ltsf/, e.g. etth1_96) or YAML path")
    parser.add_argument("--data", help="CSV (or .csv.gz) with a date column and numeric columns, OT "
                        "(default with --preset: the preset's file under --data-dir)")
    parser.add_argument("--data-dir", help="folder the preset's file is relative to (default: $XLSTM_TS_DATA)")
    parser.add_argument("--split", choices=SPLITS, help="ett-hourly, ett-minute (ETT x4) or ratio")
    parser.add_argument("--horizon", type=int)
    parser.add_argument("--lookback", type=int)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="seeds to train (none: only the baselines)")
    parser.add_argument("--mode", default=None, choices=MODES,
                        help="how variates are modelled (default: the model preset's mode)")
    parser.add_argument("--model", help="model preset name or YAML path (recorded as preset)")
    parser.add_argument("--model-set", type=parse_model_setting, nargs="+", default=[], dest="model_settings",
                        metavar="FIELD=VALUE", help="change fields of the model preset, e.g. embed_dim=32 "
                        "dropout=0.1 (values read as YAML); recorded in the preset label")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--val-check-steps", type=int)
    parser.add_argument("--patience", type=int, help="validations without improvement before stopping")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay on the weight matrices "
                        "(XLSTMForecaster(weight_decay=...))")
    parser.add_argument("--ema-decay", type=float, help="validate and keep an exponential moving average of the "
                        "weights with this decay (XLSTMForecaster(ema_decay=...))")
    parser.add_argument("--ensemble", type=int, help="forecasters trained per seed, their point forecasts averaged "
                        "(member j: random state seed + 1000 j); recorded in the preset label unless 1")
    parser.add_argument("--ensemble-lookbacks", type=int, nargs="+", metavar="L", help="train the --ensemble "
                        "members at each of these lookbacks (replaces --lookback; the longest is recorded) and "
                        "average all of them; recorded in the preset label")
    parser.add_argument("--head", choices=HEADS, help="output head: 'quantile' is scored by its median, 'mse' by "
                        "its mean (trained on the squared error); recorded in the preset label unless 'quantile'")
    parser.add_argument("--max-time", type=float, help="training seconds per seed (Lightning's max_time): training "
                        "stops there and keeps its best validated weights; recorded in the preset label")
    parser.add_argument("--verbose", action="store_true", help="print training progress (a line every tenth of "
                        "the steps) and the validation loss")
    add_accelerator_option(parser)
    parser.add_argument("--precision", help="Lightning precision of training, e.g. bf16-mixed (default: float32); "
                        "recorded in the preset label")
    parser.add_argument("--compile", action="store_true", help="compile the xLSTM blocks (XLSTMForecaster(compile="
                        "True)); recorded in the preset label")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the training loss as CUDA graphs "
                        "(XLSTMForecaster(cuda_graphs=True), one GPU); recorded in the preset label")
    parser.add_argument("--eval-batch-size", type=int, default=1024, help="windows per forward pass when scoring")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where ltsf.csv and ltsf.md live")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to the results")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines (a sweep records them once)")
    args = parser.parse_args(argv)
    try:
        preset = load_run_config(args.preset) if args.preset is not None else None
        if preset is not None and args.data is None:
            args.data = str(resolve_data_path(preset.data, args.data_dir))
    except ValueError as err:
        parser.error(str(err))
    if preset is None and (args.data is None or args.split is None):
        parser.error("--data and --split are required without --preset; pass e.g. --data path/to/ETTh1.csv.gz "
                     "--split ett-hourly, or --preset etth1_96 (run presets live in configs/ltsf/).")
    overridden = []  # training settings that differ from a preset's defaults (without a preset: from DEFAULTS)
    for field in dataclasses.fields(LTSFRunConfig):
        if field.name in ("data", "model_settings"):
            continue
        value = getattr(args, field.name)
        if value is None:
            value = getattr(preset, field.name) if preset is not None else DEFAULTS.get(field.name)
            setattr(args, field.name, value)
        reference = PRESET_DEFAULTS.get(field.name) if preset is not None else DEFAULTS.get(field.name)
        if field.name in LABELLED_SETTINGS and value != reference:
            overridden.append(f"{field.name} {value:g}")
    if isinstance(args.ensemble, bool) or not isinstance(args.ensemble, int) or args.ensemble < 1:
        parser.error(f"--ensemble must be a positive number of forecasters per seed, got {args.ensemble!r}")
    lookbacks = args.ensemble_lookbacks
    if lookbacks is not None:
        if min(lookbacks) < 1 or len(set(lookbacks)) != len(lookbacks):
            parser.error(f"--ensemble-lookbacks takes distinct positive lookbacks, got {lookbacks}; e.g. 336 512")
        args.ensemble_lookbacks = sorted(lookbacks)
        args.lookback = max(lookbacks)
        overridden.append(f"lookbacks {'+'.join(map(str, args.ensemble_lookbacks))}")
    # the preset's model fields, then the flags' (a flag changes a preset's field in place)
    settings = dict(preset.model_settings or {}) if preset is not None else {}
    settings.update(args.model_settings)
    args.model_settings = list(settings.items())
    args.label = f"{run_preset_name(args.preset)}/{args.model}" if preset is not None else args.model
    if overridden:
        args.label += f" ({', '.join(overridden)})"
    if args.model_settings:
        args.label += f" ({', '.join(f'{key} {value}' for key, value in args.model_settings)})"
    if args.max_time is not None:
        if args.max_time <= 0:
            parser.error(f"--max-time must be a positive number of seconds, got {args.max_time}")
        args.label += f" (max {args.max_time:g} s)"
    if args.head != "quantile":
        args.label += f" (head {args.head})"
    if args.precision is not None:
        args.label += f" ({args.precision})"
    speed = [name for name, on in (("compiled", args.compile), ("CUDA graphs", args.cuda_graphs)) if on]
    args.label += f" ({', '.join(speed)})" if speed else ""
    try:  # the model preset with --mode and the --model-set fields; a bad value fails here, before any data is read
        config = resolve_config(args.model)
        args.mode = args.mode or config.mode
        args.config = dataclasses.replace(config, mode=args.mode, **dict(args.model_settings))
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    return args


def fit_forecaster(args: argparse.Namespace, data: LTSFData, seed: int, callbacks: tuple = ()) -> XLSTMForecaster:
    """One seed of the forecaster in `args.mode`, trained on the training rows with the validation rows held out."""
    L, H = args.lookback, args.horizon
    train_end, val_end, _ = data.borders
    wide = pd.DataFrame(data.values[:val_end], columns=list(data.columns))  # (val_end, C)
    # rows are indexed by position: the protocol ignores calendar time, so gaps in `date` cannot matter
    panel = wide_to_long(wide.assign(date=np.arange(val_end)))
    trainer_kwargs = {"accelerator": args.accelerator, "callbacks": list(callbacks)}
    if args.max_time is not None:
        trainer_kwargs["max_time"] = timedelta(seconds=args.max_time)
    if args.precision is not None:
        trainer_kwargs["precision"] = args.precision
    model = XLSTMForecaster(prediction_length=H, context_length=L, quantiles=(0.5,), head=args.head, model=args.config,
                            max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                            weight_decay=args.weight_decay,
                            random_state=seed, val_size=val_end - train_end, val_check_steps=args.val_check_steps,
                            early_stopping_patience=args.patience, verbose=args.verbose,
                            trainer_kwargs=trainer_kwargs, compile=args.compile,
                            cuda_graphs=args.cuda_graphs, ema_decay=args.ema_decay)  # fmt: skip
    return model.fit(panel)


def score_forecaster(models: list[XLSTMForecaster], args: argparse.Namespace, n_variates: int,
                     test_past: np.ndarray, test_future: np.ndarray) -> dict[str, float]:
    """MSE/MAE of the point forecast (the quantile head's median, the mse head's mean; averaged over the members of
    an ensemble) over every test window (see `score_windows`). A member fitted on a shorter lookback
    (`context_length_`) than the windows' reads their last steps."""
    L, H, C = args.lookback, args.horizon, n_variates
    mixing = args.mode == "variate_mixing"  # rows are window-major, so C consecutive rows are one multivariate window

    def predict(past):  # (b * C, L) -> (b * C, H)
        shaped = past.reshape(-1, C, L) if mixing else past
        total = sum(model.predict_array(shaped[..., -model.context_length_:], args.eval_batch_size)["mean"]
                    for model in models)  # fmt: skip
        return (total / len(models)).reshape(-1, H)

    return score_windows(predict, test_past, test_future, args.eval_batch_size * (C if mixing else 1))


def train_and_score(args: argparse.Namespace, data: LTSFData, seed: int, test_past: np.ndarray,
                    test_future: np.ndarray) -> tuple[dict[str, float], float, float]:
    """Fit one seed in `args.mode` (`args.ensemble` members at each lookback) and score it. Returns (metrics, epochs
    (the members' mean), train seconds (their sum))."""
    H, C = args.horizon, len(data.columns)
    per_step = args.batch_size * (C if args.mode == "variate_mixing" else 1)  # a mixing batch holds every variate
    models, epochs, seconds = [], [], 0.0
    for L in args.ensemble_lookbacks or [args.lookback]:
        member_args = argparse.Namespace(**{**vars(args), "lookback": L})
        n_train_windows = C * n_windows(data.borders, "train", L, H)
        for member in range(args.ensemble):
            start = time.perf_counter()
            models.append(fit_forecaster(member_args, data, seed + MEMBER_SEED_STRIDE * member))
            seconds += time.perf_counter() - start
            epochs.append(models[-1].best_step_ * per_step / n_train_windows)
    scores = score_forecaster(models, args, C, test_past, test_future)
    return scores, float(np.mean(epochs)), seconds


def run(args: argparse.Namespace) -> list[dict]:
    """Train and score every seed plus the baselines; the result rows in `COLUMNS` order."""
    data = load_ltsf(args.data, args.split)
    L, H = args.lookback, args.horizon
    test_past, test_future = split_windows(data, "test", L, H)  # (N * C, L), (N * C, H)
    common = dict(dataset=data.name, horizon=H, lookback=L, n_test_windows=len(test_past) // len(data.columns),
                  device=device_name(args.accelerator), commit=commit_id())
    n_windows(data.borders, "val", L, H)  # fails early, before any training, if validation cannot hold a window
    baselines = {}
    if not args.no_baselines:
        start = time.perf_counter()
        coef = fit_linear_lookback(data.values, data.borders.train_end, L, H)  # (L + 1, H)
        seconds = time.perf_counter() - start
        centred = fit_linear_lookback(data.values, data.borders.train_end, L, H, center=True)  # (L + 1, H)
        baselines = {"baseline:repeat_last": (lambda past: repeat_last(past, H), 0.0),
                     "baseline:linear": (lambda past: linear_lookback(past, coef), seconds),
                     "baseline:linear_centred": (lambda past: linear_lookback(past, centred, center=True),
                                                 time.perf_counter() - start - seconds)}
    rows = []
    for seed in args.seeds:
        scores, epochs, seconds = train_and_score(args, data, seed, test_past, test_future)
        rows.append({**common, "mode": args.mode, "seed": seed, **scores, "epochs": epochs, "train_seconds": seconds,
                     "preset": args.label})
    for mode, (predict, seconds) in baselines.items():
        scores = score_windows(predict, test_past, test_future, args.eval_batch_size)
        rows.append({**common, "mode": mode, "seed": None, **scores, "epochs": None, "train_seconds": seconds,
                     "preset": ""})
    return [{c: row[c] for c in COLUMNS} for row in rows]


def record(rows: list[dict], results_dir: Path) -> Path:
    """Append rows (in `COLUMNS`) to `results_dir`/ltsf.csv and rewrite ltsf.md from the whole file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path = results_dir / "ltsf.csv"
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"seed": "Int64"})  # baselines have no seed
    frame.to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
    return write_markdown(csv_path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = run(args)
    print(json.dumps(rows, indent=1))
    if not args.no_record:
        record(rows, args.results_dir)
    return rows


if __name__ == "__main__":
    main()
