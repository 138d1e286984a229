"""Every YAML preset loads, and strict loading rejects typos."""

import pytest
import torch

from xlstm_ts.config import ModelConfig, config_from_dict, load_config, preset_names
from xlstm_ts.model import XLSTMForecastNet


def test_presets_exist():
    assert {"tiny", "small", "base"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_runs_forward(name):
    torch.manual_seed(42)
    cfg = load_config(name)
    net = XLSTMForecastNet(cfg, context_length=48, prediction_length=12, levels=(0.1, 0.5, 0.9)).eval()
    shape = (2, 3, 48) if cfg.mode == "variate_mixing" else (2, 48)  # mixing presets take windows of 3 variates
    q = net.predict(torch.randn(shape), torch.ones(shape))["quantiles"]
    assert q.shape == (*shape[:-1], 12, 3) and torch.isfinite(q).all()


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ValueError, match="Did you mean 'num_heads'"):
        config_from_dict({"num_head": 4})


def test_yaml_path_and_invalid_values(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("embed_dim: 24\nnum_heads: 3\npattern: sm\n")
    assert load_config(path) == ModelConfig(embed_dim=24, num_heads=3, pattern="sm")
    with pytest.raises(ValueError, match="pattern"):
        ModelConfig(pattern="mx")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="Unknown model preset"):
        load_config("nope")
    with pytest.raises(ValueError, match="mode must be one of"):
        ModelConfig(mode="mixing")
    with pytest.raises(ValueError, match="loss_scale"):
        ModelConfig(loss_scale="global")
    with pytest.raises(ValueError, match="mixing_dim"):
        ModelConfig(mixing_dim=10, mixing_heads=4)
    with pytest.raises(ValueError, match="mixing_pattern"):
        ModelConfig(mixing_pattern="x")
