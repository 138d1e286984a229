"""xlstm_ts: time-series forecasting with xLSTM (sLSTM / mLSTM block stacks on patched inputs)."""

from xlstm_ts.config import ModelConfig, load_config, preset_names
from xlstm_ts.forecaster import XLSTMForecaster
from xlstm_ts.tuning import TuneResult, default_search_space, tune

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TuneResult", "XLSTMForecaster", "__version__", "default_search_space", "load_config",
           "preset_names", "tune"]
