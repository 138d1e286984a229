"""Data adapters: long-frame validation, windows, synthetic panels, benchmark file readers and the LTSF protocol."""

from xlstm_ts.datasets.frame import Panel, future_times, validate_long_frame
from xlstm_ts.datasets.gluonts_adapter import from_gluonts, to_gluonts
from xlstm_ts.datasets.ltsf import LTSFData, load_ltsf, score_windows, split_windows
from xlstm_ts.datasets.readers import read_ett, read_m4, resolve_data_dir, wide_to_long
from xlstm_ts.datasets.synthetic import make_covariate_panel, make_synthetic_panel
from xlstm_ts.datasets.windows import WindowSampler, context_windows, sliding_windows

__all__ = [
    "LTSFData",
    "Panel",
    "WindowSampler",
    "context_windows",
    "from_gluonts",
    "to_gluonts",
    "future_times",
    "load_ltsf",
    "make_covariate_panel",
    "make_synthetic_panel",
    "read_ett",
    "read_m4",
    "resolve_data_dir",
    "score_windows",
    "sliding_windows",
    "split_windows",
    "validate_long_frame",
    "wide_to_long",
]
