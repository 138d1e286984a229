"""xlstm_ts: time-series forecasting with xLSTM (sLSTM / mLSTM block stacks on patched inputs)."""

from xlstm_ts.config import ModelConfig, load_config, preset_names
from xlstm_ts.forecaster import XLSTMForecaster

__version__ = "0.1.0"

__all__ = ["ModelConfig", "XLSTMForecaster", "__version__", "load_config", "preset_names"]
