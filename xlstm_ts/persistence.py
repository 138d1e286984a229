"""Save and load fitted forecasters: a JSON file of settings plus weights-only torch files (weights; the last context of
each series with its covariates, and the static features). Nothing is unpickled."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xlstm_ts.config import ModelConfig
from xlstm_ts.covariates import CovariateSpec
from xlstm_ts.datasets.frame import Panel

FORMAT = 2
"""Format 2 adds covariates; format 1 files (no covariates) still load."""
READABLE = (1, 2)
SETTINGS_FILE, WEIGHTS_FILE, CONTEXT_FILE = "forecaster.json", "weights.pt", "context.pt"


def _encode_time(value) -> dict:
    if isinstance(value, (int, np.integer)):
        return {"int": int(value)}
    return {"timestamp": pd.Timestamp(value).isoformat()}


def _decode_time(value: dict):
    return value["int"] if "int" in value else pd.Timestamp(value["timestamp"])


def _encode_freq(freq) -> dict:
    return {"int": int(freq)} if isinstance(freq, (int, np.integer)) else {"offset": freq.freqstr}


def _decode_freq(value: dict):
    return value["int"] if "int" in value else pd.tseries.frequencies.to_offset(value["offset"])


def _encode_id(uid):
    if isinstance(uid, (str, bool)) or uid is None:
        return uid
    if isinstance(uid, (int, np.integer)):
        return int(uid)
    if isinstance(uid, (float, np.floating)):
        return float(uid)
    warnings.warn(f"Series id {uid!r} of type {type(uid).__name__} is saved as its string form.", stacklevel=3)
    return str(uid)


def save_forecaster(forecaster, path: str | Path) -> Path:
    """Write a fitted forecaster to the directory `path` (created if needed)."""
    from xlstm_ts import __version__

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in forecaster.get_params(deep=False).items() if k not in ("model", "trainer_kwargs")}
    params["quantiles"] = [float(q) for q in params["quantiles"]]
    params["log_dir"] = None if params["log_dir"] is None else str(params["log_dir"])
    spec: CovariateSpec = forecaster.covariates_
    for role, columns in zip(("past_covariates", "future_covariates", "static_covariates"),
                             (spec.past, spec.future, spec.static)):
        params[role] = None if params[role] is None else list(columns)
    panel: Panel = forecaster.panel_
    settings = {
        "format": FORMAT,
        "xlstm_ts_version": __version__,
        "params": params,
        "model_config": forecaster.config_.to_dict(),
        "context_length": forecaster.context_length_,
        "freq": _encode_freq(forecaster.freq_),
        "ids": [_encode_id(uid) for uid in panel.ids],
        "ends": [_encode_time(t) for t in panel.ends],
        "train_loss": forecaster.train_loss_,
        "linear_skip_ridge": getattr(forecaster, "linear_skip_ridge_", None),
        "covariates": {"past": spec.past, "future": spec.future, "static": spec.static,
                       "categories": spec.categories},
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    torch.save({k: v.detach().cpu() for k, v in forecaster.net_.state_dict().items()}, folder / WEIGHTS_FILE)
    keep = forecaster.context_length_
    tails = [torch.from_numpy(v[-keep:].copy()) for v in panel.values]
    context = {"lengths": torch.tensor([len(t) for t in tails]), "values": torch.cat(tails)}
    if panel.covariates is not None:  # (sum of tail lengths, K)
        context["covariates"] = torch.cat([torch.from_numpy(c[-keep:].copy()) for c in panel.covariates])
    if forecaster.static_features_ is not None:
        context["static"] = torch.from_numpy(forecaster.static_features_.copy())  # (N, Ks)
    torch.save(context, folder / CONTEXT_FILE)
    return folder


def load_forecaster(cls, path: str | Path, map_location: str | torch.device | None = None):
    """Rebuild a forecaster saved by `save_forecaster`; weights are read with `weights_only=True`."""
    from xlstm_ts import __version__
    from xlstm_ts.model import XLSTMForecastNet

    folder = Path(path)
    if not (folder / SETTINGS_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a saved forecaster: expected {SETTINGS_FILE} inside it.")
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    if settings.get("format") not in READABLE:
        raise ValueError(f"Unsupported save format {settings.get('format')!r}; this version reads formats {READABLE}.")
    if settings["xlstm_ts_version"] != __version__:
        warnings.warn(f"Forecaster saved with xlstm_ts {settings['xlstm_ts_version']}, loading with {__version__}.",
                      stacklevel=3)
    cfg = ModelConfig(**settings["model_config"])
    forecaster = cls(model=cfg, **{**settings["params"], "quantiles": tuple(settings["params"]["quantiles"])})
    levels = tuple(forecaster.quantiles)
    spec = CovariateSpec(**settings.get("covariates", {}))
    net = XLSTMForecastNet(cfg, settings["context_length"], forecaster.prediction_length, sorted(levels),
                           head=forecaster.head, n_past=len(spec.past), n_future=len(spec.future),
                           n_static=spec.n_static)
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    if map_location is not None:
        net.to(map_location)
    context = torch.load(folder / CONTEXT_FILE, map_location="cpu", weights_only=True)
    lengths = context["lengths"].tolist()
    values = [t.numpy() for t in torch.split(context["values"], lengths)]
    covariates = [t.numpy() for t in torch.split(context["covariates"], lengths)] if "covariates" in context else None
    freq = _decode_freq(settings["freq"])
    forecaster.net_, forecaster.config_, forecaster.levels_ = net, cfg, tuple(sorted(levels))
    forecaster.context_length_, forecaster.freq_ = settings["context_length"], freq
    ends = [_decode_time(t) for t in settings["ends"]]
    starts = [end - (len(v) - 1) * freq for end, v in zip(ends, values)]  # first step of each saved context tail
    forecaster.panel_ = Panel(ids=settings["ids"], values=values, starts=starts, ends=ends, freq=freq,
                              covariates=covariates)
    forecaster.train_loss_, forecaster.n_series_ = settings["train_loss"], len(values)
    forecaster.best_val_loss_ = forecaster.best_step_ = forecaster.log_dir_ = None
    forecaster.linear_skip_ridge_ = settings.get("linear_skip_ridge")
    forecaster.covariates_ = spec
    forecaster.static_features_ = context["static"].numpy() if "static" in context else None
    return forecaster
