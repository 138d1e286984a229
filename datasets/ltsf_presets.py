"""Run presets of the long-horizon benchmark: one YAML file per data set and horizon in `configs/ltsf/`.

A run preset fixes everything `benchmarks/ltsf.py` needs to reproduce one cell of the results table: the file
(relative to the data directory), its split, the horizon and lookback, the model preset with the fields the run
changes in it (`model_settings`) and the training budget.

Examples:
    >>> config = load_run_config("etth1_96")
    >>> config.data, config.horizon, config.lookback, config.model, config.model_settings
    ('ETT/ETTh1.csv.gz', 96, 336, 'ltsf_mixing', {'dropout': 0.6})
    >>> resolve_data_path(config.data, "path/to/datasets")  # doctest: +SKIP
    PosixPath('path/to/datasets/ETT/ETTh1.csv.gz')
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from xlstm_ts.config import ModelConfig
from xlstm_ts.datasets.ltsf import SPLITS
from xlstm_ts.datasets.readers import ENV_VAR
from xlstm_ts.heads import HEADS
from xlstm_ts.presets import check_keys, read_preset, shipped_presets

_POSITIVE_INTS = ("horizon", "lookback", "batch_size", "max_steps", "val_check_steps", "patience", "ensemble")


@dataclass(frozen=True)
class LTSFRunConfig:
    """One benchmark run: data, protocol and training budget. YAML presets in `configs/ltsf/` are instances."""

    data: str
    """Path of the CSV relative to the data directory (e.g. 'ETT/ETTh1.csv.gz'); an absolute path is used as is."""
    split: str
    """'ett-hourly', 'ett-minute' or 'ratio' (see `xlstm_ts.datasets.ltsf`)."""
    horizon: int
    """Forecast steps H."""
    lookback: int
    """Context steps L."""
    model: str = "ltsf_mixing"
    """Model preset name (configs/model/) or YAML path; its `mode` is the run's multivariate mode."""
    batch_size: int = 32
    """Windows per optimizer step (each holds every variate in mode 'variate_mixing')."""
    learning_rate: float = 1e-4
    """Adam learning rate."""
    max_steps: int = 3000
    """Most optimizer steps."""
    val_check_steps: int = 150
    """Steps between validations; the weights with the lowest validation loss are kept."""
    patience: int = 5
    """Validations without improvement before training stops."""
    head: str = "quantile"
    """Output head (`xlstm_ts.heads.HEADS`): "quantile" scores its median, "mse" its mean (trained on the squared
    error, the loss the MSE metric rewards)."""
    ema_decay: float | None = None
    """Decay of the averaged weights that are validated and kept (`XLSTMForecaster.ema_decay`); None: none."""
    weight_decay: float = 1e-4
    """AdamW weight decay on the weight matrices (`XLSTMForecaster.weight_decay`)."""
    ensemble: int = 1
    """Forecasters trained per seed (member j with random state seed + 1000 j); their point forecasts are averaged
    before scoring, and the row's train seconds are the members' sum."""
    model_settings: dict | None = None
    """Fields of the model preset this run changes, e.g. {"dropout": 0.6} (`ModelConfig` fields but `mode`, which
    is the model preset's); None: none. `benchmarks/ltsf.py --model-set` changes them further."""

    def __post_init__(self) -> None:
        for name in ("data", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"LTSFRunConfig.{name} must be a non-empty string, got {value!r}.")
        if self.split not in SPLITS:
            raise ValueError(f"LTSFRunConfig.split must be one of {SPLITS}, got {self.split!r}.")
        if self.head not in HEADS:
            raise ValueError(f"LTSFRunConfig.head must be one of {HEADS}, got {self.head!r}.")
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"LTSFRunConfig.{name} must be a positive integer, got {value!r}.")
        lr = self.learning_rate
        if isinstance(lr, str):
            raise ValueError(f"LTSFRunConfig.learning_rate must be a number, got the string {lr!r}; YAML reads "
                             "exponents without a decimal point as text, so write e.g. 1.0e-4 instead of 1e-4.")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"LTSFRunConfig.learning_rate must be a positive number, got {lr!r}.")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not wd >= 0:
            raise ValueError(f"LTSFRunConfig.weight_decay must be a number >= 0, got {wd!r}.")
        ema = self.ema_decay
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0 < ema < 1):
            raise ValueError(f"LTSFRunConfig.ema_decay must be None or a number between 0 and 1, got {ema!r}.")
        _check_model_settings(self.model_settings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MODEL_SETTING_NAMES = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "mode")
"""The `ModelConfig` fields a run may change (`LTSFRunConfig.model_settings`, `ltsf.py --model-set`); the mode is the
model preset's."""


def _check_model_settings(settings: object) -> None:
    """Refuse model settings that are not a mapping of `ModelConfig` field names (other than `mode`)."""
    if settings is None:
        return
    names = MODEL_SETTING_NAMES
    if not isinstance(settings, dict) or not settings:
        raise ValueError(f"LTSFRunConfig.model_settings must be None or a non-empty mapping of model fields to "
                         f"values, e.g. {{'dropout': 0.6}}, got {settings!r}.")
    for key in settings:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Valid fields: {sorted(names)}."
            where = " (the multivariate mode comes from the model preset)" if key == "mode" else ""
            raise ValueError(f"LTSFRunConfig.model_settings: {key!r} is not a field of ModelConfig{where}.{hint}")


def run_config_from_dict(data: dict, source: str = "dict") -> LTSFRunConfig:
    """Build an LTSFRunConfig, refusing unknown keys with a suggestion and naming missing required keys."""
    check_keys(data, LTSFRunConfig, source)
    required = [f.name for f in dataclasses.fields(LTSFRunConfig) if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ValueError(f"LTSFRunConfig ({source}) lacks the required keys {missing}; every run preset names "
                         f"{required}.")
    return LTSFRunConfig(**data)


def run_preset_names(prefix: str = "") -> list[str]:
    """Names of the run presets shipped in configs/ltsf/ (e.g. 'etth1_96') that start with `prefix`, by data set
    and then horizon."""
    names = [p for p in shipped_presets("ltsf") if p.startswith(prefix)]
    return sorted(names, key=lambda p: (p.rsplit("_", 1)[0], int(p.rsplit("_", 1)[1])))


def run_preset_name(name_or_path: str | Path) -> str:
    """The name a run is recorded under: the preset name, or the file name without `.yaml` for a path."""
    path = Path(name_or_path)
    return path.stem if path.suffix in (".yaml", ".yml") else str(name_or_path)


def load_run_config(name_or_path: str | Path) -> LTSFRunConfig:
    """An LTSFRunConfig from a run preset name (e.g. 'etth1_96') or a YAML file path."""
    return run_config_from_dict(*read_preset("ltsf", "run", name_or_path))


def resolve_data_path(relative: str | Path, data_dir: str | os.PathLike | None = None) -> Path:
    """The file a run preset names: `relative` under `data_dir`, else under `$XLSTM_TS_DATA`.

    Raises:
        ValueError: Neither a data directory nor the environment variable is set, or the file does not exist.
    """
    if Path(relative).is_absolute():
        path, where = Path(relative), "an absolute path"
    else:
        chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
        if not chosen:
            raise ValueError(f"The file {str(relative)!r} is relative to a data directory, but none was given: pass "
                             f"--data-dir DIR (data_dir=...) or set {ENV_VAR}=DIR, where DIR holds {str(relative)!r}.")
        path = Path(chosen).expanduser() / relative
        where = f"{str(relative)!r} under {'--data-dir' if data_dir is not None else '$' + ENV_VAR} {str(chosen)!r}"
    if not path.is_file():
        raise ValueError(f"Expected the data file {str(path)!r} ({where}), but it does not exist; point the data "
                         "directory at the folder that holds it.")
    return path
