"""The forecaster's float32_matmul_precision: applied with CUDA during fit/predict, restored after, checked early."""

import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel
from xlstm_ts.training_utils import matmul_precision


@pytest.fixture
def restore_precision():
    before = torch.get_float32_matmul_precision()
    yield before
    torch.set_float32_matmul_precision(before)


def test_setting_applies_inside_and_is_restored_with_cuda(monkeypatch, restore_precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.set_float32_matmul_precision("highest")
    with matmul_precision("high"):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(RuntimeError), matmul_precision("medium"):
        raise RuntimeError("boom")
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("setting, cuda", [(None, True), ("high", False)])
def test_no_change_for_none_or_without_cuda(monkeypatch, restore_precision, setting, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    torch.set_float32_matmul_precision("highest")
    with matmul_precision(setting):
        assert torch.get_float32_matmul_precision() == "highest"


def test_fit_uses_the_setting(monkeypatch, restore_precision):
    seen = []
    import xlstm_ts.forecaster as module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(module, "fit_trainer", lambda *a, **kw: seen.append(torch.get_float32_matmul_precision()))
    torch.set_float32_matmul_precision("highest")
    df = make_synthetic_panel(n_series=1, length=80)
    XLSTMForecaster(prediction_length=4, context_length=8, model="tiny", max_steps=1, float32_matmul_precision="medium",
                    trainer_kwargs={"accelerator": "cpu"}).fit(df)  # fmt: skip
    assert seen == ["medium"] and torch.get_float32_matmul_precision() == "highest"


def test_unknown_setting_raises_before_training():
    df = make_synthetic_panel(n_series=1, length=80)
    with pytest.raises(ValueError, match="float32_matmul_precision must be"):
        XLSTMForecaster(prediction_length=4, model="tiny", max_steps=1, float32_matmul_precision="tf32").fit(df)
