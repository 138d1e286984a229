"""Where the network lives: the initial validation pass and prediction run on the device that trains, and
multi-process strategies keep the calling process off the GPU."""

import lightning as L
import numpy as np
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel
from xlstm_ts.training_utils import training_device


def test_training_device_is_the_single_device_or_the_cpu():
    assert training_device(L.Trainer(accelerator="cpu", devices=1, logger=False)) == torch.device("cpu")
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)  # not launched here
    assert training_device(ddp) == torch.device("cpu")


def _fit(accelerator: str) -> tuple[XLSTMForecaster, object]:
    df = make_synthetic_panel(n_series=3, length=120, freq="h")
    model = XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", max_steps=6, batch_size=8,
                            val_size=12, val_check_steps=3, random_state=0,
                            trainer_kwargs={"accelerator": accelerator})
    return model.fit(df), df


def test_cpu_fit_keeps_the_network_on_the_cpu():
    model, _ = _fit("cpu")
    assert {p.device.type for p in model.net_.parameters()} == {"cpu"}
    assert model.best_step_ is not None and np.isfinite(model.best_val_loss_)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fit_predicts_on_the_gpu_and_saves_cpu_weights(tmp_path):
    model, df = _fit("gpu")
    assert {p.device.type for p in model.net_.parameters()} == {"cuda"}
    forecast = model.predict()
    model.save(tmp_path / "m")
    loaded = XLSTMForecaster.load(tmp_path / "m", map_location="cpu")
    assert {p.device.type for p in loaded.net_.parameters()} == {"cpu"}
    np.testing.assert_allclose(loaded.predict()["mean"], forecast["mean"], rtol=1e-3, atol=1e-4)
