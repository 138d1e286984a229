"""XLSTMForecaster(compile=True): the stacks train compiled and forecast like the eager fit; multi-process fits are
refused before any work."""

import os
import shutil

import numpy as np
import pytest

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel
from xlstm_ts.stack import XLSTMStack

NO_CXX = not shutil.which(os.environ.get("CXX", "g++"))
MODEL = {"embed_dim": 16, "num_heads": 2, "pattern": "ms", "patch_length": 8, "dropout": 0.0}


def _fit(compile_, **kw):
    df = make_synthetic_panel(n_series=3, length=160, freq="h")
    return XLSTMForecaster(prediction_length=8, context_length=32, model=MODEL, max_steps=6, batch_size=8,
                           random_state=0, compile=compile_, **kw).fit(df)  # fmt: skip


@pytest.mark.skipif(NO_CXX, reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_fit_matches_eager_fit(one_thread):
    eager, compiled = _fit(False), _fit(True)
    stacks = [m for m in compiled.net_.modules() if isinstance(m, XLSTMStack)]
    assert stacks and all(s._compiled_call_impl is not None for s in stacks)
    assert eager.net_.stack._compiled_call_impl is None
    a, b = eager.predict(), compiled.predict()
    assert list(a.columns) == list(b.columns)
    # same seed, same windows: fused kernels only change the rounding
    np.testing.assert_allclose(b["mean"].to_numpy(), a["mean"].to_numpy(), rtol=1e-3, atol=1e-3)


def test_compile_refuses_multi_process_fits():
    with pytest.raises(ValueError, match="compile=True needs a single-device fit"):
        _fit(True, trainer_kwargs={"devices": 2, "strategy": "ddp_spawn"})


def test_compile_must_be_a_bool():
    with pytest.raises(ValueError, match="compile must be True or False, got 'yes'"):
        _fit("yes")
