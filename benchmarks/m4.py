"""M4 Hourly / Weekly benchmark: xlstm_ts against seasonal naive, Naive2, AutoETS and DeepAR in the same run.

Protocol: the official M4 train/test files (Hourly 414 series, h 48, m 24; Weekly 359 series, h 13, m 1), nothing
tuned on the test part, scored as the competition did (`xlstm_ts.m4_metrics`): sMAPE (%), MASE, OWA against Naive2 on
the same series, MSIS and coverage of 95 % intervals (quantiles 0.025/0.975); also 80 % coverage and wQL (0.1-0.9).

- xlstm_ts: one model per head in `--heads` (default quantile, normal, student_t; recorded as preset `MODEL/HEAD`),
  context `--context-multiple` x h; the last h training steps of each series validate, the weights with the lowest
  validation loss are kept; the point forecast is the median (the 0.5 quantile of the head's distribution).
- DeepAR (gluonts torch `DeepAREstimator`): its defaults (context h, Student-t output, batch 32, 100 sample paths),
  trained on the whole training series for the same number of optimizer steps; point forecast: the sample median.
- AutoETS (statsforecast, season m, one process): normal intervals at 20/40/60/80/95 %. Needs `pip install
  statsforecast` (or `pip install -e ".[bench]"`); without it the method is skipped with a message.
- seasonal naive and Naive2 (M4's own definitions, `xlstm_ts.m4_metrics`): point forecasts only.

Usage (appends to benchmarks/results/m4.csv and rewrites m4_hourly.md / m4_weekly.md there; see --results-dir,
--no-record):
    python benchmarks/m4.py --group Hourly --seeds 0 1 2 --data-dir ../shared/datasets --accelerator gpu
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import read_m4
from xlstm_ts.datasets.readers import M4_GROUPS
from xlstm_ts.heads import HEADS
from xlstm_ts.m4_metrics import m4_scores, naive2, owa, seasonal_naive
from xlstm_ts.metrics import coverage, weighted_quantile_loss
from xlstm_ts.training_utils import quantile_column, quiet

from provenance import add_accelerator_option, commit_id, device_name

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = ("Hourly", "Weekly")
METHODS = ("xlstm_ts", "deepar", "autoets", "seasonal_naive", "naive2")
SEEDED = ("xlstm_ts", "deepar")
QUANTILES = (0.025, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.975)
WQL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COLUMNS = ["group", "method", "seed", "n_series", "horizon", "season", "context_length", "steps", "preset", "smape",
           "mase", "owa", "msis", "coverage_95", "coverage_80", "wql", "train_seconds", "device", "commit"]
# Official M4 scores (sMAPE, MASE, OWA, MSIS, 95 % coverage). Source: the organisers' results file "Evaluation and
# Ranks.xlsx" in the repository Mcompetitions/M4-methods (Makridakis, Spiliotis & Assimakopoulos, IJF 2018 and 2020),
# which gives |coverage - 0.95| only, hence "0.95 ± d" (Naive: recomputed from the M4 files). ETS/ARIMA have official
# interval scores only; their point scores are a third-party re-run (tm1611/M4-Statistical-Methods), marked "re-run".
M4_ANCHORS = {
    "Hourly": {"Doornik et al. (best on Hourly)": (8.913, 0.801, 0.410, 6.139, "0.95 ± 0.002"),
               "Smyl ES-RNN (M4 winner)": (9.328, 0.893, 0.440, 7.928, "0.95 ± 0.040"),
               "ARIMA (point: re-run)": (14.090, 0.949, 0.581, 7.538, "0.95 ± 0.001"),
               "sNaive": (13.912, 1.193, 0.627, None, None),
               "ETS (point: re-run)": (17.307, 1.824, 0.851, 17.487, "0.95 ± 0.001"),
               "Naive2": (18.383, 2.395, 1.000, None, None),
               "Naive": (43.003, 11.608, 3.593, 71.245, "0.9385")},
    "Weekly": {"Darin & Stellwagen, Forecast Pro (best on Weekly)": (6.582, 2.107, 0.739, None, None),
               "Petropoulos & Svetunkov": (6.726, 2.133, 0.751, 16.200, "0.95 ± 0.012"),
               "Smyl ES-RNN (M4 winner)": (7.817, 2.356, 0.851, 22.034, "0.95 ± 0.021"),
               "Damped (best benchmark)": (8.866, 2.404, 0.917, None, None),
               "ARIMA (point: re-run)": (8.591, 2.542, 0.927, 19.575, "0.95 ± 0.005"),
               "ETS (point: re-run)": (8.727, 2.527, 0.931, 20.386, "0.95 ± 0.014"),
               "Naive2 = Naive = sNaive": (9.161, 2.777, 1.000, 26.358, "0.9494")},
}


@dataclass
class M4Data:
    freq: str
    season: int
    ids: list
    history: list  # N in-sample arrays
    y: np.ndarray  # (N, F) test targets
    train: pd.DataFrame  # long frame unique_id, ds, y


@dataclass
class Forecast:
    point: np.ndarray  # (N, F)
    quantiles: np.ndarray | None  # (N, F, Q) at QUANTILES, None for point-only methods
    seconds: float


def load(group: str, data_dir: str | None, max_series: int | None) -> M4Data:
    """The first `max_series` series (all: None) of an M4 group, in file order."""
    train, test = read_m4(group, data_dir)
    if train.empty:
        raise ValueError(f"M4 {group} has a test file but no training file; expected M4/Train/{group}-train.csv[.gz]"
                         " in the data directory.")
    ids = list(pd.unique(train["unique_id"]))[:max_series]
    train, test = train[train["unique_id"].isin(ids)], test[test["unique_id"].isin(ids)]
    history = [g.to_numpy(np.float64) for _, g in train.groupby("unique_id", sort=False)["y"]]
    y = by_series(test, ids, "y")  # (N, F)
    freq, horizon, season = M4_GROUPS[group]
    if y.shape[1] != horizon:
        raise ValueError(f"M4 {group} test rows should hold {horizon} steps per series, found {y.shape[1]}.")
    return M4Data(freq, season, ids, history, y, train.reset_index(drop=True))


def by_series(frame: pd.DataFrame, ids: list, column: str) -> np.ndarray:
    """A long frame's `column` as (N, F), rows in the order of `ids`, time ascending."""
    order = pd.Categorical(frame["unique_id"], categories=ids)
    frame = frame.assign(_order=order).sort_values(["_order", "ds"], kind="stable")
    return frame[column].to_numpy(np.float64).reshape(len(ids), -1)


def run_xlstm(args: argparse.Namespace, data: M4Data, seed: int, head: str) -> Forecast:
    H = data.y.shape[1]
    model = XLSTMForecaster(prediction_length=H, context_length=args.context_multiple * H, quantiles=QUANTILES,
                            head=head, model=args.model, max_steps=args.max_steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, random_state=seed, val_size=H,
                            val_check_steps=args.val_check_steps, early_stopping_patience=args.patience,
                            trainer_kwargs={"accelerator": args.accelerator})
    start = time.perf_counter()
    model.fit(data.train)
    seconds = time.perf_counter() - start
    frame = model.predict()
    quantiles = np.stack([by_series(frame, data.ids, quantile_column(q)) for q in QUANTILES], axis=-1)  # (N, F, Q)
    return Forecast(quantiles[..., QUANTILES.index(0.5)], quantiles, seconds)


def run_deepar(args: argparse.Namespace, data: M4Data, seed: int) -> Forecast:
    H, start = data.y.shape[1], pd.Period(data.train["ds"].iloc[0], freq=data.freq)
    entries = [{"start": start, "target": x.astype(np.float32), "item_id": i} for i, x in zip(data.ids, data.history)]
    with tempfile.TemporaryDirectory() as tmp, quiet(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*non-tuple sequence for multidimensional indexing.*")
        warnings.filterwarnings("ignore", message=r"Using `json`-module for json-handling")
        from gluonts.torch.model.deepar import DeepAREstimator

        L.seed_everything(seed, verbose=False)
        # 50 batches per epoch is the estimator's default; the epoch limit only has to let max_steps run out
        trainer = dict(max_steps=args.max_steps, max_epochs=math.ceil(args.max_steps / 50), devices=1,
                       accelerator=args.accelerator, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, default_root_dir=tmp)
        estimator = DeepAREstimator(freq=data.freq, prediction_length=H, trainer_kwargs=trainer)
        begin = time.perf_counter()
        predictor = estimator.train(entries)
        seconds = time.perf_counter() - begin
        forecasts = list(predictor.predict(entries))
    quantiles = np.stack([np.stack([f.quantile(q) for q in QUANTILES], axis=-1) for f in forecasts])  # (N, F, Q)
    return Forecast(quantiles[..., QUANTILES.index(0.5)], quantiles, seconds)


def run_autoets(data: M4Data) -> Forecast | None:
    try:
        from statsforecast import StatsForecast
        from statsforecast.models import AutoETS
    except ImportError:
        print("AutoETS skipped: statsforecast is not installed; pip install statsforecast (or -e '.[bench]').")
        return None
    width = {q: round(100 * abs(1 - 2 * q)) for q in QUANTILES}  # central interval whose bound is quantile q
    columns = {q: "AutoETS" if q == 0.5 else f"AutoETS-{'lo' if q < 0.5 else 'hi'}-{width[q]}" for q in QUANTILES}
    start = time.perf_counter()
    sf = StatsForecast(models=[AutoETS(season_length=data.season)], freq=data.freq, n_jobs=1)
    frame = sf.forecast(df=data.train, h=data.y.shape[1], level=sorted(set(width.values()) - {0}))
    seconds = time.perf_counter() - start
    quantiles = np.stack([by_series(frame, data.ids, columns[q]) for q in QUANTILES], axis=-1)  # (N, F, Q)
    return Forecast(by_series(frame, data.ids, "AutoETS"), quantiles, seconds)


def score(forecast: Forecast, data: M4Data, naive2_scores: dict[str, float]) -> dict[str, float]:
    q = forecast.quantiles
    lower, upper = (None, None) if q is None else (q[..., 0], q[..., -1])
    scores = {**m4_scores(data.y, forecast.point, data.history, data.season, lower, upper),
              "coverage_80": float("nan"), "wql": float("nan")}
    scores["owa"] = owa(scores, naive2_scores)
    if q is not None:
        scores["coverage_80"] = coverage(data.y, q[..., QUANTILES.index(0.1)], q[..., QUANTILES.index(0.9)])
        scores["wql"] = weighted_quantile_loss(data.y, q[..., [QUANTILES.index(v) for v in WQL_LEVELS]], WQL_LEVELS)
    return scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", default="Hourly", choices=GROUPS)
    parser.add_argument("--data-dir", default=None, help="folder with M4/Train and M4/Test (default: $XLSTM_TS_DATA)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of xlstm_ts and DeepAR")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-series", type=int, default=None, help="use only the first N series (smoke runs)")
    parser.add_argument("--heads", nargs="+", default=["quantile", "normal", "student_t"], choices=HEADS,
                        help="xlstm_ts heads, one model each (negative_binomial needs count data)")
    parser.add_argument("--model", default="small", help="xlstm_ts model preset name or YAML path")
    parser.add_argument("--context-multiple", type=int, default=4, help="xlstm_ts context length in horizons")
    parser.add_argument("--max-steps", type=int, default=2000, help="optimizer steps of xlstm_ts and of DeepAR")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--val-check-steps", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10, help="validations without improvement before stopping")
    add_accelerator_option(parser)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where m4.csv and m4_<group>.md live")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to the results")
    args = parser.parse_args(argv)
    if args.max_series is not None and args.max_series < 1:
        parser.error(f"--max-series must be a positive number of series, got {args.max_series}.")
    return args


def run(args: argparse.Namespace) -> list[dict]:
    """Forecast and score every requested method (seeded ones once per seed); the result rows in `COLUMNS` order."""
    data = load(args.group, args.data_dir, args.max_series)
    H = data.y.shape[1]
    common = dict(group=args.group, n_series=len(data.ids), horizon=H, season=data.season,
                  device=device_name(args.accelerator), commit=commit_id())
    naive2_scores = m4_scores(data.y, naive2(data.history, H, data.season), data.history, data.season)
    jobs = [(m, None, None) for m in METHODS if m in args.methods and m not in SEEDED]
    jobs += [(m, seed, head) for seed in args.seeds for m in SEEDED if m in args.methods
             for head in (args.heads if m == "xlstm_ts" else [None])]
    rows = []
    for method, seed, *head in jobs:
        if method == "xlstm_ts":
            forecast = run_xlstm(args, data, seed, head[0])
            setup = (args.context_multiple * H, args.max_steps, f"{args.model}/{head[0]}")
        elif method == "deepar":
            forecast, setup = run_deepar(args, data, seed), (H, args.max_steps, "default")
        elif method == "autoets":
            forecast, setup = run_autoets(data), (0, 0, "")
        else:
            start, reference = time.perf_counter(), naive2 if method == "naive2" else seasonal_naive
            point = reference(data.history, H, data.season)  # (N, F)
            forecast, setup = Forecast(point, None, time.perf_counter() - start), (0, 0, "")
        if forecast is None:
            continue
        row = dict(common, method=method, seed=seed, context_length=setup[0], steps=setup[1], preset=setup[2],
                   train_seconds=forecast.seconds, **score(forecast, data, naive2_scores))
        rows.append({c: row[c] for c in COLUMNS})
    return rows


def _cell(values: pd.Series, digits: int = 3) -> str:  # mean ± sample std over seeds; one value alone; none: "–"
    values = values.dropna()
    if len(values) < 2:
        return f"{values.mean():.{digits}f}" if len(values) else "–"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def write_markdown(csv_path: Path) -> list[Path]:
    """Rewrite m4_<group>.md (m4_hourly.md, m4_weekly.md) next to `csv_path` for each group in it: one row per
    (series, method, preset, context, steps) with the mean ± sample std over seeds (a rerun of the same seed replaces
    the earlier row), then the official M4 rows."""
    table = pd.read_csv(csv_path, dtype={"preset": str}, keep_default_na=False, na_values=[""])
    table["preset"] = table["preset"].fillna("")
    keys = ["n_series", "method", "preset", "context_length", "steps"]
    table = table.drop_duplicates(["group"] + keys + ["seed"], keep="last")
    table["_order"] = table["method"].map({m: i for i, m in enumerate(METHODS)}).fillna(len(METHODS))
    intro = ["Written by `benchmarks/m4.py` (protocol in its docstring). Seeded methods: mean ± "
             "sample std over seeds. OWA is relative to Naive2 on the same series, so rows on fewer series than the "
             "group (smoke runs) do not compare with the M4 rows. M4 rows: official scores; `re-run` marks "
             "third-party point scores of methods whose official scores cover intervals only.", ""]
    paths = []
    anchor = lambda v: "–" if v is None else (v if isinstance(v, str) else f"{v:.3f}")
    header = ("| method | preset | series | L | steps | seeds | sMAPE | MASE | OWA | MSIS | coverage 95% | "
              "coverage 80% | wQL | train s (per seed) | device |")
    for group in [g for g in GROUPS if g in set(table["group"])]:
        part = table[table["group"] == group].sort_values(["n_series", "_order"], ascending=[False, True])
        first = part.iloc[0]
        lines = [f"# M4 {group} (h = {first['horizon']}, m = {first['season']})", "", *intro, header,
                 "|" + "---|" * 15]
        for (n_series, method, preset, context, steps), cell in part.groupby(keys, sort=False):
            seeds = int(cell["seed"].notna().sum())
            lines.append(f"| {method} | {preset or '–'} | {n_series} | {context or '–'} | {steps or '–'} | "
                         f"{seeds or '–'} | {_cell(cell['smape'])} | {_cell(cell['mase'])} | {_cell(cell['owa'])} | "
                         f"{_cell(cell['msis'])} | {_cell(cell['coverage_95'], 4)} | {_cell(cell['coverage_80'], 4)}"
                         f" | {_cell(cell['wql'], 4)} | {cell['train_seconds'].mean():.1f} | "
                         f"{', '.join(sorted(set(cell['device'])))} |")
        for name, values in M4_ANCHORS[group].items():
            cells = " | ".join(map(anchor, values))
            lines.append(f"| M4: {name} | – | all | – | – | – | {cells} | – | – | – | – |")
        paths.append(csv_path.parent / f"m4_{group.lower()}.md")
        paths[-1].write_text("\n".join(lines) + "\n")
    return paths


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = run(args)
    print(json.dumps(rows, indent=1))
    if not args.no_record:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        csv_path = args.results_dir / "m4.csv"
        frame = pd.DataFrame(rows, columns=COLUMNS).astype({"seed": "Int64"})  # deterministic methods have no seed
        frame.to_csv(csv_path, mode="a", header=not csv_path.exists(), index=False)
        write_markdown(csv_path)
    return rows


if __name__ == "__main__":
    main()
