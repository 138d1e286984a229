"""The long-horizon forecasting (LTSF) protocol of the Informer/Autoformer loaders, for any CSV in their layout.

A file has a `date` column and numeric columns, the target `OT` among them (moved last, as those loaders do). Rows
are used in file order and split by position:

    ett-hourly  train [0, 8640), val [8640, 11520), test [11520, 14400); later rows unused (ETTh1, ETTh2)
    ett-minute  the same months at 15 minutes, x4: [0, 34560), [34560, 46080), [46080, 57600) (ETTm1, ETTm2)
    ratio       n_train = int(0.7 n), n_test = int(0.2 n), n_val = n - n_train - n_test (every other data set)

Validation and test windows start `lookback` rows before their split, so the first window's context lies in the
previous split and its target starts on the split's first row; windows have stride 1 and none is dropped. Values are
standardized with a StandardScaler fitted on the training rows only (mean and population std per column), and MSE /
MAE are computed on the scaled data over every window, step and variate.

Examples:
    >>> data = load_ltsf("ETT/ETTh1.csv.gz", "ett-hourly")  # doctest: +SKIP
    >>> past, future = split_windows(data, "test", lookback=336, horizon=96)  # doctest: +SKIP
    >>> score_windows(lambda p: repeat_last(p, 96), past, future)  # doctest: +SKIP
    {'mse': 1.294..., 'mae': 0.713...}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

SPLITS = ("ett-hourly", "ett-minute", "ratio")
FIXED_BORDERS = {"ett-hourly": (8640, 11520, 14400), "ett-minute": (34560, 46080, 57600)}
"""End rows (exclusive) of train, val and test for the fixed ETT splits: 12/4/4 months of 30 days."""
PARTS = ("train", "val", "test")


class Borders(NamedTuple):
    """End rows (exclusive) of the three consecutive splits; train starts at row 0."""

    train_end: int
    val_end: int
    test_end: int


@dataclass(frozen=True)
class LTSFData:
    """A data set under the protocol.

    Attributes:
        name: File name without `.csv` / `.csv.gz` (e.g. "ETTh1").
        columns: Variate names, target last.
        values: (S, C) float32 values scaled with train statistics; rows after the test split are cut off.
        borders: Split borders in rows of `values`.
        mean: (C,) float64 training-row means.
        scale: (C,) float64 training-row population standard deviations (1 for a constant column).
    """

    name: str
    columns: tuple[str, ...]
    values: np.ndarray
    borders: Borders
    mean: np.ndarray
    scale: np.ndarray


def read_ltsf_csv(path: str | Path, target: str = "OT") -> pd.DataFrame:
    """The numeric columns of a CSV with a `date` column, in file order with `target` moved last, as float64."""
    raw = pd.read_csv(path)
    if "date" not in raw.columns:
        raise ValueError(f"{str(path)!r} has no 'date' column (columns: {list(raw.columns)[:10]}); expected the "
                         "ETT/Autoformer layout: date, numeric columns..., OT. Rename the time column to 'date'.")
    if target not in raw.columns:
        raise ValueError(f"{str(path)!r} has no target column {target!r} (columns: {list(raw.columns)[:10]}); "
                         f"rename the target column to {target!r}.")
    columns = [c for c in raw.columns if c not in ("date", target)] + [target]
    bad = [c for c in columns if not pd.api.types.is_numeric_dtype(raw[c]) or pd.api.types.is_bool_dtype(raw[c])]
    if bad:
        dtypes = [str(raw[c].dtype) for c in bad[:5]]
        raise ValueError(f"{str(path)!r}: columns {bad[:5]} are not numeric (dtypes {dtypes}); every column except "
                         "'date' must hold numbers. Drop or convert them.")
    frame = raw[columns].astype(np.float64)
    missing = frame.isna().sum()
    if missing.any():
        raise ValueError(f"{str(path)!r} has missing values ({missing[missing > 0].to_dict()}); the protocol needs "
                         "complete columns. Fill or drop them before benchmarking.")
    return frame


def split_borders(split: Literal["ett-hourly", "ett-minute", "ratio"], n_rows: int) -> Borders:
    """Borders of the named split for a file of `n_rows` data rows."""
    if split in FIXED_BORDERS:
        borders = Borders(*FIXED_BORDERS[split])
        if n_rows < borders.test_end:
            raise ValueError(f"Split {split!r} needs at least {borders.test_end} rows, the file has {n_rows}. "
                             "Use split='ratio' for files that are not ETT data sets.")
        return borders
    if split != "ratio":
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
    if min(n_train, n_test, n_rows - n_train - n_test) < 1:
        raise ValueError(f"A 0.7/0.1/0.2 split of {n_rows} rows leaves an empty part; the file needs >= 10 rows.")
    return Borders(n_train, n_rows - n_test, n_rows)


def standard_scaler(values: np.ndarray, train_end: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (population std, 1 where a column is constant) of rows [0, train_end) of (S, C) values,
    in float64: the statistics of sklearn's StandardScaler fitted on the training rows."""
    train = np.asarray(values[:train_end], dtype=np.float64)  # (train_end, C)
    mean, std = train.mean(0), train.std(0)  # (C,), (C,)
    return mean, np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)


def load_ltsf(path: str | Path, split: Literal["ett-hourly", "ett-minute", "ratio"],
              target: str = "OT") -> LTSFData:
    """Read a CSV in the ETT/Autoformer layout, split it and scale it with training-row statistics."""
    frame = read_ltsf_csv(path, target)
    borders = split_borders(split, len(frame))
    raw = frame.to_numpy()[:borders.test_end]  # (S, C) float64
    mean, scale = standard_scaler(raw, borders.train_end)
    name = Path(path).name.removesuffix(".gz").removesuffix(".csv")
    values = ((raw - mean) / scale).astype(np.float32)  # (S, C)
    return LTSFData(name, tuple(map(str, frame.columns)), values, borders, mean, scale)


def part_rows(borders: Borders, part: Literal["train", "val", "test"], lookback: int) -> tuple[int, int]:
    """Row range [start, stop) of the targets of a part's windows.

    Val and test windows take their context from the `lookback` rows before the part; train windows lie entirely in
    the training rows, so their first target is row `lookback`.
    """
    if part not in PARTS:
        raise ValueError(f"Unknown part {part!r}; expected one of {PARTS}.")
    start, stop = {"train": (lookback, borders.train_end), "val": borders[:2], "test": borders[1:]}[part]
    return start, stop


def n_windows(borders: Borders, part: Literal["train", "val", "test"], lookback: int, horizon: int) -> int:
    """Windows per variate of a part: target rows - horizon + 1. Raises if the part cannot hold one window."""
    L, F = lookback, horizon
    if not (isinstance(L, (int, np.integer)) and isinstance(F, (int, np.integer)) and L >= 1 and F >= 1):
        raise ValueError(f"lookback and horizon must be positive integers, got {L!r} and {F!r}.")
    start, stop = part_rows(borders, part, L)
    if part != "train" and start < L:
        raise ValueError(f"A lookback of {L} needs {L} rows before the {part} split, which starts at row {start}; "
                         f"lower the lookback to at most {start}.")
    if stop - start < F:
        raise ValueError(f"The {part} split holds {stop - start} target rows (lookback {L}), fewer than the horizon "
                         f"{F}; lower the horizon{' or the lookback' if part == 'train' else ''}.")
    return stop - start - F + 1


def split_windows(data: LTSFData, part: Literal["train", "val", "test"], lookback: int,
                  horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of a part, stride 1, nothing dropped (target rows as in `part_rows`).

    Returns:
        past (N * C, L) and future (N * C, F) float32, window-major then variate, with N = `n_windows(...)`.
    """
    L, F = lookback, horizon
    n_windows(data.borders, part, L, F)
    start, stop = part_rows(data.borders, part, L)
    view = np.lib.stride_tricks.sliding_window_view(data.values[start - L:stop], L + F, axis=0)  # (N, C, L + F)
    view = view.reshape(-1, L + F)  # (N * C, L + F)
    return np.ascontiguousarray(view[:, :L]), np.ascontiguousarray(view[:, L:])


def score_windows(predict: Callable[[np.ndarray], np.ndarray], past: np.ndarray, future: np.ndarray,
                  batch_size: int = 1024) -> dict[str, float]:
    """MSE and MAE of `predict` over every window, step and variate, independent of `batch_size`.

    Args:
        predict: Maps a batch of contexts (b, L) to point forecasts (b, F).
        past, future: (N, L) contexts and (N, F) targets, as returned by `split_windows`.
        batch_size: Windows per call of `predict`.

    Returns:
        {"mse": float, "mae": float}. Errors are summed per window in float64 and then over all windows at once,
        so batching changes nothing as long as `predict` gives the same forecast for a window in any batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    n, F = future.shape
    squared, absolute = np.empty(n, np.float64), np.empty(n, np.float64)  # per-window error sums
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pred = np.asarray(predict(past[start:stop]), dtype=np.float64)  # (b, F)
        if pred.shape != (stop - start, F):
            raise ValueError(f"predict returned shape {pred.shape} for {stop - start} windows; expected "
                             f"{(stop - start, F)} (one forecast of the horizon per window).")
        err = pred - future[start:stop]  # (b, F) float64
        squared[start:stop] = np.square(err).sum(1)
        absolute[start:stop] = np.abs(err).sum(1)
    return {"mse": float(squared.sum() / (n * F)), "mae": float(absolute.sum() / (n * F))}


def repeat_last(past: np.ndarray, horizon: int) -> np.ndarray:
    """The last context value repeated over the horizon: (N, L) -> (N, F)."""
    return np.repeat(past[:, -1:], horizon, axis=1)


def fit_linear_lookback(values: np.ndarray, train_end: int, lookback: int, horizon: int,
                        chunk_rows: int = 65536, center: bool = False) -> np.ndarray:
    """Least-squares map from the L context values (plus an intercept) to the F targets, shared by all variates and
    fitted on every training window (context and target inside rows [0, train_end)).

    The fit streams windows through a QR factorization of [context, 1, target], so memory stays at `chunk_rows`
    windows for any data set size. With `center`, each window's context mean is taken from its context and target
    before the fit and added back to the forecast (a level-free map, as the forecaster's 'center' scaling).

    Returns:
        coef (L + 1, F) float64; forecast with `linear_lookback(past, coef, center)`.
    """
    L, F = lookback, horizon
    n_windows(Borders(train_end, train_end, train_end), "train", L, F)
    view = np.lib.stride_tricks.sliding_window_view(values[:train_end], L + F, axis=0)  # (N, C, L + F)
    step = max(1, chunk_rows // view.shape[1])
    r = np.zeros((0, L + 1 + F))
    for start in range(0, len(view), step):
        win = view[start:start + step].reshape(-1, L + F).astype(np.float64)  # (k * C, L + F)
        if center:
            win = win - win[:, :L].mean(axis=1, keepdims=True)
        block = np.hstack([win[:, :L], np.ones((len(win), 1)), win[:, L:]])  # (k * C, L + 1 + F)
        r = np.linalg.qr(np.vstack([r, block]), mode="r")  # (<= L + 1 + F, L + 1 + F)
    coef, *_ = np.linalg.lstsq(r[:, :L + 1], r[:, L + 1:], rcond=None)  # (L + 1, F)
    return coef


def linear_lookback(past: np.ndarray, coef: np.ndarray, center: bool = False) -> np.ndarray:
    """Forecasts of the fitted linear map: (N, L) contexts -> (N, F); `center` as the map was fitted."""
    past = past.astype(np.float64)
    level = past.mean(axis=1, keepdims=True) if center else 0.0  # (N, 1)
    return (past - level) @ coef[:-1] + coef[-1] + level
