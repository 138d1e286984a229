"""Long-frame validation: a pandas frame (id, time, target [, covariates]) becomes a validated `Panel` of series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Panel:
    """Validated univariate series, in the order in which their ids first appear in the frame.

    Attributes:
        ids: Series identifiers, as they appeared in the id column.
        values: One float32 array per series (NaN marks a missing value).
        starts: Timestamp (or integer) of each series' first row.
        ends: Timestamp (or integer) of each series' last row.
        freq: A pandas offset for datetime time columns, or an integer step for integer time columns.
        covariates: One float32 array (S, K) per series, rows aligned with `values`, holding the K covariate
            columns asked for (NaN = missing), or None when none were asked for.
    """

    ids: list
    values: list[np.ndarray]
    starts: list
    ends: list
    freq: pd.DateOffset | int
    covariates: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def time_at(self, series: int, position: int):
        """Timestamp (or integer time) of row `position` of series number `series` (the index is regular)."""
        return self.starts[series] + int(position) * self.freq


def _check_columns(df: pd.DataFrame, columns: dict[str, str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"Expected a pandas DataFrame in long format, got {type(df).__name__}.")
    missing = [f"{role}={name!r}" for role, name in columns.items() if name not in df.columns]
    if missing:
        raise ValueError(
            f"The frame is missing column(s) {', '.join(missing)}; it has {list(df.columns)}. "
            "Rename the columns or pass id_col/time_col/target_col to name yours."
        )
    if len(df) == 0:
        raise ValueError("The frame is empty: expected at least one row per series.")


def time_values(df: pd.DataFrame, time_col: str) -> pd.Series:
    """The time column as datetimes or integers (strings are parsed with pd.to_datetime)."""
    ts = df[time_col]
    if pd.api.types.is_integer_dtype(ts) or pd.api.types.is_datetime64_any_dtype(ts):
        return ts
    try:
        return pd.to_datetime(ts)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"Column {time_col!r} must hold timestamps or integers, got dtype {ts.dtype} "
            f"(first value {ts.iloc[0]!r}). Convert it with pd.to_datetime."
        ) from err


def _series_freq(uid, times: pd.Index) -> pd.DateOffset | int | None:
    """The step of one series, or None if it has fewer than two rows."""
    if len(times) < 2:
        return None
    if pd.api.types.is_integer_dtype(times):
        steps = np.unique(np.diff(times.to_numpy()))
        if len(steps) != 1:
            raise ValueError(
                f"Series {uid!r} has irregular integer steps {steps[:5].tolist()}; expected one constant step. "
                "Insert the missing rows with y=NaN (they are treated as missing values)."
            )
        return int(steps[0])
    idx = pd.DatetimeIndex(times)
    if len(idx) == 2:
        return pd.tseries.frequencies.to_offset(idx[1] - idx[0])
    freq = pd.infer_freq(idx)
    if freq is None:
        gaps = pd.Series(idx[1:] - idx[:-1]).value_counts()
        raise ValueError(
            f"Series {uid!r} has an irregular time index (steps {gaps.index[:3].astype(str).tolist()}); "
            "expected one regular frequency. Insert the missing timestamps with y=NaN, or resample the series."
        )
    return pd.tseries.frequencies.to_offset(freq)


def _same_freq(a, b) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return a == b or a.freqstr == b.freqstr


def validate_long_frame(
    df: pd.DataFrame,
    id_col: str = "unique_id",
    time_col: str = "ds",
    target_col: str = "y",
    freq: str | int | None = None,
    covariate_cols: Sequence[str] = (),
) -> Panel:
    """Check a long frame and turn it into a `Panel`.

    Args:
        df: Long frame with one row per (series, timestamp). Unsorted input is sorted; the frame is not modified.
        id_col: Name of the series id column. Default: `"unique_id"`.
        time_col: Name of the timestamp column (datetimes or integers). Default: `"ds"`.
        target_col: Name of the numeric target column; NaN marks missing values. Default: `"y"`.
        freq: The frequency (pandas alias such as `"h"`, or an integer step). Default: inferred from the data.
        covariate_cols: Numeric (or boolean) columns to carry along as `Panel.covariates`, in this order.

    Returns:
        The validated panel.

    Raises:
        ValueError: on missing columns, an empty frame, duplicate (id, time) pairs, a non-numeric target,
            an irregular time index, series with different frequencies, or a missing or non-numeric covariate column.
    """
    _check_columns(df, {"id_col": id_col, "time_col": time_col, "target_col": target_col})
    covariate_cols = list(covariate_cols)
    _check_covariate_columns(df, covariate_cols)
    if not pd.api.types.is_numeric_dtype(df[target_col]) or pd.api.types.is_bool_dtype(df[target_col]):
        raise ValueError(
            f"Target column {target_col!r} must be numeric, got dtype {df[target_col].dtype}. "
            "Convert it with pd.to_numeric(df[col], errors='coerce') (unparseable values become NaN = missing)."
        )
    work = pd.DataFrame({"id": df[id_col].to_numpy(), "t": time_values(df, time_col).to_numpy(),
                         "y": df[target_col].to_numpy(dtype=np.float64)})
    extra = [f"x{k}" for k in range(len(covariate_cols))]  # positional names: covariates may be called "id" or "t"
    for name, col in zip(extra, covariate_cols):
        work[name] = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
    dup = work.duplicated(["id", "t"])
    if dup.any():
        first = work.loc[dup].iloc[0]
        raise ValueError(
            f"Found {int(dup.sum())} duplicate ({id_col}, {time_col}) rows, e.g. ({first['id']!r}, {first['t']}). "
            "Each series may have one row per timestamp: aggregate or drop the duplicates first."
        )
    work["order"] = pd.factorize(work["id"])[0]  # series keep the order of their first appearance
    work = work.sort_values(["order", "t"], kind="stable")
    given = freq if isinstance(freq, int) or freq is None else pd.tseries.frequencies.to_offset(freq)
    ids, values, starts, ends, freqs, covariates = [], [], [], [], {}, []
    for uid, group in work.groupby("id", sort=False):
        times = pd.Index(group["t"].to_numpy())
        f = _series_freq(uid, times)
        if f is not None:
            freqs[uid] = f
        ids.append(uid)
        values.append(group["y"].to_numpy(dtype=np.float32))
        covariates.append(group[extra].to_numpy(dtype=np.float32))  # (S, K)
        starts.append(times[0])
        ends.append(times[-1])
    found = list(freqs.values())
    if given is None:
        if not found:
            raise ValueError("Cannot infer a frequency: every series has a single row. Pass freq=... explicitly.")
        given = found[0]
    mismatched = [(uid, f) for uid, f in freqs.items() if not _same_freq(f, given)]
    if mismatched:
        uid, f = mismatched[0]
        raise ValueError(
            f"Series {uid!r} has frequency {getattr(f, 'freqstr', f)!r} but expected "
            f"{getattr(given, 'freqstr', given)!r} (mixed frequencies in one frame). "
            "Fit one forecaster per frequency, or resample the series to a common frequency."
        )
    return Panel(ids=ids, values=values, starts=starts, ends=ends, freq=given,
                 covariates=covariates if covariate_cols else None)


def _check_covariate_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"The frame has no covariate column(s) {missing}; it has {list(df.columns)}. Add them, or "
                         "drop them from past_covariates/future_covariates.")
    for col in columns:
        if not (pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])):
            raise ValueError(f"Covariate column {col!r} must be numeric or boolean, got dtype {df[col].dtype} "
                             f"(first value {df[col].iloc[0]!r}). Encode it as numbers first, e.g. one column per "
                             "category with pd.get_dummies, or pd.to_numeric for numbers stored as text.")


def future_times(last, freq: pd.DateOffset | int, horizon: int) -> np.ndarray:
    """The `horizon` timestamps after `last` at frequency `freq`."""
    if isinstance(freq, int):
        return last + freq * np.arange(1, horizon + 1)
    return pd.date_range(start=last, periods=horizon + 1, freq=freq)[1:].to_numpy()


def horizon_index(ids: list, lasts: list, freq: pd.DateOffset | int, horizon: int, id_col: str = "unique_id",
                  time_col: str = "ds") -> pd.DataFrame:
    """Long frame of id and time for the `horizon` steps after `lasts[i]` of every series `ids[i]`, series-major."""
    times = [future_times(last, freq, horizon) for last in lasts]
    return pd.DataFrame({id_col: np.repeat(np.asarray(ids, dtype=object), horizon),
                         time_col: np.concatenate(times) if times else np.array([])})
