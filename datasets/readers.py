"""Readers for public benchmark files kept in a local directory (ETT CSVs, M4 train/test CSVs).

The directory is the `data_dir` argument, else the `XLSTM_TS_DATA` environment variable. It holds the files in the
layout `ETT/ETTh1.csv[.gz]`, `M4/Train/Hourly-train.csv[.gz]`, `M4/Test/Hourly-test.csv[.gz]`, ...
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

ENV_VAR = "XLSTM_TS_DATA"
ETT_NAMES = ("ETTh1", "ETTh2", "ETTm1", "ETTm2")
M4_GROUPS = {"Hourly": ("h", 48, 24), "Daily": ("D", 14, 1), "Weekly": ("W", 13, 1),
             "Monthly": ("MS", 18, 12), "Quarterly": ("QS", 8, 4), "Yearly": ("YS", 6, 1)}
"""M4 group -> (pandas frequency, horizon, seasonality used by MASE)."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: `data_dir` if given, else `$XLSTM_TS_DATA`."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if chosen is None:
        raise ValueError(f"No data directory given: pass data_dir=... or set the environment variable {ENV_VAR}.")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise ValueError(f"Data directory {str(path)!r} does not exist (from {'data_dir' if data_dir else ENV_VAR}).")
    return path


def _find(base: Path, relative: str) -> Path:
    for candidate in (base / relative, base / f"{relative}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Expected {relative} or {relative}.gz under {str(base)!r}; neither exists.")


def read_ett(name: str = "ETTh1", data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """An ETT data set as a wide frame: `date` (datetime64) + HUFL, HULL, MUFL, MULL, LUFL, LULL, OT (float32)."""
    if name not in ETT_NAMES:
        raise ValueError(f"Unknown ETT data set {name!r}; expected one of {ETT_NAMES}.")
    df = pd.read_csv(_find(resolve_data_dir(data_dir), f"ETT/{name}.csv"), parse_dates=["date"])
    value_cols = [c for c in df.columns if c != "date"]
    df[value_cols] = df[value_cols].astype(np.float32)
    return df


def wide_to_long(df: pd.DataFrame, time_col: str = "date", columns: list[str] | None = None,
                 id_col: str = "unique_id") -> pd.DataFrame:
    """A wide frame (one column per variate) as a long frame with columns unique_id, ds, y."""
    columns = [c for c in df.columns if c != time_col] if columns is None else columns
    long = df.melt(id_vars=[time_col], value_vars=columns, var_name=id_col, value_name="y")
    return long.rename(columns={time_col: "ds"})[[id_col, "ds", "y"]]


def _m4_long(wide: pd.DataFrame, freq: str, start: pd.Timestamp | None, offsets: dict | None) -> pd.DataFrame:
    ids = wide["V1"].to_numpy()
    values = wide.drop(columns="V1").to_numpy(dtype=np.float64)
    lengths = (~np.isnan(values)).sum(axis=1)
    rows = []
    for uid, vals, n in zip(ids, values, lengths):
        first = start if offsets is None else offsets[uid]
        ds = pd.date_range(first, periods=n, freq=freq)
        rows.append(pd.DataFrame({"unique_id": uid, "ds": ds, "y": vals[:n].astype(np.float32)}))
    return pd.concat(rows, ignore_index=True)


def read_m4(group: str = "Hourly", data_dir: str | os.PathLike | None = None,
            start: str = "2000-01-01") -> tuple[pd.DataFrame, pd.DataFrame]:
    """M4 official train and test parts of one group as long frames (unique_id, ds, y).

    M4 files carry no timestamps, so each series starts at `start` with the group's frequency; the test part
    continues the train part. Test files exist alone for some groups (returned train frame is then empty).

    Returns:
        (train, test) long frames.
    """
    if group not in M4_GROUPS:
        raise ValueError(f"Unknown M4 group {group!r}; expected one of {list(M4_GROUPS)}.")
    freq = M4_GROUPS[group][0]
    base = resolve_data_dir(data_dir)
    test_wide = pd.read_csv(_find(base, f"M4/Test/{group}-test.csv"))
    try:
        train_wide = pd.read_csv(_find(base, f"M4/Train/{group}-train.csv"))
    except FileNotFoundError:
        train_wide = None
    if train_wide is None:
        empty = pd.DataFrame({"unique_id": pd.Series(dtype=object), "ds": pd.Series(dtype="datetime64[ns]"),
                              "y": pd.Series(dtype=np.float32)})
        return empty, _m4_long(test_wide, freq, pd.Timestamp(start), None)
    train = _m4_long(train_wide, freq, pd.Timestamp(start), None)
    last = train.groupby("unique_id", sort=False)["ds"].max()
    offset = pd.tseries.frequencies.to_offset(freq)
    test = _m4_long(test_wide, freq, None, {uid: ts + offset for uid, ts in last.items()})
    return train, test
