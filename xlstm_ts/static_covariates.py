"""Static covariates: one value per series, from `static_df` or from frame columns constant within each series.

Numeric and boolean columns are used as numbers; other columns (strings, categories) are one-hot encoded over the
categories seen in fit. Every static value is required (NaN is an error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from xlstm_ts.covariates import CovariateSpec


def is_numeric(values: pd.Series) -> bool:
    """Numeric or boolean: used as numbers (other static columns are one-hot encoded)."""
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def static_table(forecaster, spec: CovariateSpec, ids: list, df: pd.DataFrame | None,
                 static_df: pd.DataFrame | None) -> pd.DataFrame:
    """Raw static values, one row per id of `ids` in that order: from `static_df` if given, else from the frame."""
    id_col, columns = forecaster.id_col, spec.static
    if static_df is not None:
        if not isinstance(static_df, pd.DataFrame):
            raise TypeError(f"static_df must be a pandas DataFrame, got {type(static_df).__name__}.")
        missing = [c for c in [id_col, *columns] if c not in static_df.columns]
        if missing:
            raise ValueError(f"static_df is missing column(s) {missing}; it has {list(static_df.columns)}. It needs "
                             f"{id_col!r} and every static covariate {columns}, one row per series.")
        dup = static_df[id_col].duplicated()
        if dup.any():
            raise ValueError(f"static_df has more than one row for series {static_df[id_col][dup].iloc[0]!r}; "
                             "keep one row per series.")
        source, what = static_df[[id_col, *columns]], "static_df"
    else:
        absent = [c for c in columns if df is None or c not in df.columns]
        if absent:
            raise ValueError(f"Static covariate column(s) {absent} are not in the frame. Pass static_df (one row per "
                             f"series, columns {id_col!r} and {columns}) or add them as columns that are constant "
                             "within each series.")
        source, what = df[[id_col, *columns]], "the frame"
        for col in columns:
            counts = source.groupby(id_col, sort=False)[col].nunique(dropna=False)
            if (counts > 1).any():
                uid = counts.index[counts > 1][0]
                values = source.loc[source[id_col] == uid, col].drop_duplicates().head(2).tolist()
                raise ValueError(f"Static covariate {col!r} is not constant within series {uid!r} (values "
                                 f"{values[0]!r} and {values[1]!r}). A static covariate takes one value per series: "
                                 "fix the column, pass the values in static_df (one row per series), or list the "
                                 "column in past_covariates/future_covariates.")
    table = source.drop_duplicates(id_col).set_index(id_col).reindex(pd.Index(ids, dtype=object))
    absent_ids = [uid for uid in ids if uid not in set(source[id_col])]
    if absent_ids:
        raise ValueError(f"{what} has no row for series {absent_ids[0]!r} ({len(absent_ids)} series missing), so its "
                         f"static covariate(s) {columns} are unknown. Add one row per series (check the type of the "
                         f"id column, e.g. 1 vs '1').")
    for col in columns:
        if table[col].isna().any():
            uid = table.index[table[col].isna()][0]
            raise ValueError(f"Static covariate {col!r} is NaN for series {uid!r} (in {what}). Static covariates "
                             "are required: give every series a value.")
    return table


def encode_static(table: pd.DataFrame, spec: CovariateSpec, ids: list) -> np.ndarray:
    """(N, Ks) float32 features: numeric columns as they are, the others one-hot over the categories of fit."""
    parts = []
    for col in spec.static:
        values = table[col]
        if col not in spec.categories:
            if not is_numeric(values):
                raise ValueError(f"Static covariate {col!r} was numeric in fit but has dtype {values.dtype} now "
                                 f"(first value {values.iloc[0]!r}); convert it with pd.to_numeric.")
            parts.append(values.to_numpy(dtype=np.float32, na_value=np.nan)[:, None])  # (N, 1)
            continue
        known, text = spec.categories[col], values.astype(str).to_numpy()
        unseen = ~np.isin(text, known)
        if unseen.any():
            i = int(np.argmax(unseen))
            raise ValueError(f"Static covariate {col!r} of series {ids[i]!r} is {values.iloc[i]!r}, a category not "
                             f"seen in fit (known: {known}). Map it to a known category, or refit with it.")
        parts.append((text[:, None] == np.asarray(known)[None, :]).astype(np.float32))  # (N, categories)
    return np.concatenate(parts, axis=1)  # (N, Ks)


def static_features(forecaster, ids: list, df: pd.DataFrame | None, static_df: pd.DataFrame | None,
                    ) -> np.ndarray | None:
    """(N, Ks) static features of `ids`: from static_df, else from the frame's columns, else the ones seen in fit."""
    spec: CovariateSpec = forecaster.covariates_
    if not spec.static:
        return None
    if static_df is not None or (df is not None and all(c in df.columns for c in spec.static)):
        return encode_static(static_table(forecaster, spec, ids, df, static_df), spec, ids)
    fitted = {uid: k for k, uid in enumerate(forecaster.panel_.ids)}
    unknown = [uid for uid in ids if uid not in fitted]
    if unknown:
        raise ValueError(f"Series {unknown[0]!r} was not seen in fit, so its static covariate(s) {spec.static} are "
                         f"unknown: pass static_df (one row per series) or add the columns to the frame.")
    return forecaster.static_features_[[fitted[uid] for uid in ids]]
