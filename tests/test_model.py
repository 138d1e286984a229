"""Network pieces: scaling, patching, quantile head, blocks and the whole forward pass."""

import numpy as np
import pytest
import torch

from xlstm_ts.config import ModelConfig
from xlstm_ts.heads import QuantileHead, check_quantiles, pinball_loss, with_median
from xlstm_ts.mlstm_block import MLSTMBlock
from xlstm_ts.model import XLSTMForecastNet
from xlstm_ts.patching import PatchEncoder, num_patches
from xlstm_ts.scaling import InstanceScaler
from xlstm_ts.slstm_block import SLSTMBlock
from xlstm_ts.stack import XLSTMStack


def test_scaler_uses_observed_values_only():
    target = torch.tensor([[1.0, 2.0, 3.0, 1000.0], [5.0, 5.0, 5.0, 5.0]])
    observed = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    loc, scale = InstanceScaler("std")(target, observed)
    assert loc[0].item() == pytest.approx(2.0)
    assert scale[0].item() == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert loc[1].item() == pytest.approx(5.0) and scale[1].item() == pytest.approx(5.0)  # flat: mean magnitude


@pytest.mark.parametrize("L, P, S", [(96, 16, 16), (100, 16, 8), (10, 16, 16), (17, 4, 3)])
def test_patch_encoder_covers_context(L, P, S):
    enc = PatchEncoder(L, P, S, embed_dim=8)
    T = num_patches(L, P, S)
    assert enc.padded_length >= L and enc.padded_length - S < L or T == 1
    out = enc(torch.randn(3, L), torch.ones(3, L))
    assert out.shape == (3, T, 8)


def test_patch_encoder_mask_channel_reaches_tokens():
    enc = PatchEncoder(16, 8, 8, embed_dim=4)
    values = torch.zeros(1, 16)
    a = enc(values, torch.ones(1, 16))
    b = enc(values, torch.cat([torch.zeros(1, 8), torch.ones(1, 8)], dim=1))
    assert not torch.allclose(a[:, 0], b[:, 0]) and torch.allclose(a[:, 1], b[:, 1])


def test_pinball_loss_matches_definition():
    torch.manual_seed(42)
    y, q, levels = torch.randn(4, 3), torch.randn(4, 3, 2), torch.tensor([0.2, 0.7])
    expected = np.zeros((4, 3, 2))
    for idx in np.ndindex(4, 3, 2):
        err = y[idx[:2]].item() - q[idx].item()
        tau = levels[idx[2]].item()
        expected[idx] = tau * err if err >= 0 else (tau - 1) * err
    np.testing.assert_allclose(pinball_loss(y, q, levels).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_quantile_head_never_crosses():
    torch.manual_seed(42)
    head = QuantileHead(5, 7, with_median((0.05, 0.1, 0.9, 0.95)))
    with torch.no_grad():
        head.proj.weight.mul_(50.0)
    out = head(torch.randn(64, 5), centre_offset=torch.randn(64, 7))
    assert out.shape == (64, 7, 5)
    assert (out.diff(dim=-1) >= 0).all()


@pytest.mark.parametrize("bad", [(0.0, 0.5), (0.5, 1.0), (-0.1,), ()])
def test_quantile_levels_outside_unit_interval_raise(bad):
    with pytest.raises(ValueError, match="quantiles"):
        check_quantiles(bad)


@pytest.mark.parametrize("block", ["m", "s"])
def test_blocks_keep_shape_and_are_causal(block):
    torch.manual_seed(42)
    layer = MLSTMBlock(16, 2, chunk_size=4) if block == "m" else SLSTMBlock(16, 2)
    with torch.no_grad():  # non-trivial recurrent weights so memory mixing is exercised
        for name, p in layer.named_parameters():
            if "recurrent" in name:
                p.normal_(0, 0.3)
    layer.eval()
    x = torch.randn(2, 9, 16)
    y = layer(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] += 1.0  # future change must not move earlier outputs
    y2 = layer(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])


def test_mlstm_gates_are_the_linear_map_of_concat_qkv():
    """The block's gate pre-activations (two products with the weight's column blocks) equal gates(concat(q|k, v))."""
    torch.manual_seed(0)
    block = MLSTMBlock(16, 2).double()
    torch.nn.init.normal_(block.gates.weight)
    torch.nn.init.normal_(block.gates.bias)
    qk, v = torch.randn(3, 5, 2 * block.inner, dtype=torch.float64), torch.randn(3, 5, block.inner, dtype=torch.float64)
    expected = block.gates(torch.cat([qk, v], dim=-1))  # (3, 5, 2 NH)
    torch.testing.assert_close(block._gate_preactivations(qk, v), expected, rtol=1e-12, atol=1e-12)


def test_stack_follows_pattern():
    stack = XLSTMStack(ModelConfig(pattern="msmm", embed_dim=16, num_heads=2))
    kinds = ["m" if isinstance(b, MLSTMBlock) else "s" for b in stack.blocks]
    assert "".join(kinds) == "msmm"


def test_net_forward_shapes_loss_and_gradients():
    torch.manual_seed(42)
    cfg = ModelConfig(patch_length=8, embed_dim=16, num_heads=2, pattern="ms", dropout=0.0)
    net = XLSTMForecastNet(cfg, context_length=30, prediction_length=6, levels=(0.1, 0.5, 0.9))
    spec = net.describe_inputs(batch_size=3)
    past = torch.randn(*spec["past_target"][0]) * 10 + 50
    observed = torch.ones(*spec["past_observed"][0])
    observed[0, :12] = 0.0
    past[0, :12] = float("nan")  # missing values may hold NaN
    q, loc, scale = net(past, observed)
    assert q.shape == (3, 6, 3) and loc.shape == (3, 1) and torch.isfinite(q).all()
    loss = net.loss(past, observed, torch.randn(3, 6) * 10 + 50, torch.ones(3, 6))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    pred = net.predict(past, observed)
    torch.testing.assert_close(pred["quantiles"], q.detach() * scale.unsqueeze(-1) + loc.unsqueeze(-1))
    torch.testing.assert_close(pred["mean"], pred["quantiles"][..., 1])


def test_net_is_scale_equivariant():
    torch.manual_seed(42)
    net = XLSTMForecastNet(ModelConfig(patch_length=4, embed_dim=8, num_heads=2, pattern="m"), 16, 4, (0.5,)).eval()
    past, obs = torch.randn(2, 16), torch.ones(2, 16)
    big, small = net.predict(past * 100 + 7, obs), net.predict(past, obs)
    torch.testing.assert_close(big["quantiles"], small["quantiles"] * 100 + 7, rtol=1e-4, atol=1e-3)


def test_normal_head_loss_and_quantiles_match_scipy():
    from scipy import stats

    from xlstm_ts.heads import NormalHead

    torch.manual_seed(42)
    head = NormalHead(6, 4)
    params = head(torch.randn(5, 6))
    target, observed = torch.randn(5, 4), torch.ones(5, 4)
    mu, sd = params[..., 0].detach().numpy(), params[..., 1].detach().numpy()
    expected = -stats.norm.logpdf(target.numpy(), mu, sd).mean()
    assert head.loss(target, params, observed).item() == pytest.approx(expected, rel=1e-5)
    q = head.quantiles(params, (0.1, 0.5, 0.9)).detach().numpy()
    np.testing.assert_allclose(q, stats.norm.ppf([0.1, 0.5, 0.9], mu[..., None], sd[..., None]), rtol=1e-5, atol=1e-5)
    assert (params[..., 1] > 0).all()


def test_student_t_head_loss_and_quantiles_match_scipy():
    from scipy import stats

    from xlstm_ts.heads import StudentTHead

    torch.manual_seed(42)
    head = StudentTHead(6, 4).double()
    params = head(torch.randn(5, 6, dtype=torch.float64))
    target, observed = torch.randn(5, 4, dtype=torch.float64), torch.ones(5, 4, dtype=torch.float64)
    loc, sc, dof = (params[..., j].detach().numpy() for j in range(3))
    assert (dof > 2).all() and (sc > 0).all()
    expected = -stats.t.logpdf(target.numpy(), dof, loc, sc).mean()
    assert head.loss(target, params, observed).item() == pytest.approx(expected, rel=1e-10)
    q = head.quantiles(params, (0.1, 0.9)).detach().numpy()
    np.testing.assert_allclose(q, stats.t.ppf([0.1, 0.9], dof[..., None], loc[..., None], sc[..., None]), rtol=1e-10)


def test_negative_binomial_head_loss_and_quantiles_match_scipy():
    from scipy import stats

    from xlstm_ts.heads import NegativeBinomialHead

    torch.manual_seed(42)
    head = NegativeBinomialHead(6, 4).double()
    params = head(torch.randn(5, 6, dtype=torch.float64))
    scale = torch.rand(5, 1, dtype=torch.float64) * 10 + 1
    counts = torch.randint(0, 40, (5, 4)).double()
    r = params[..., 0].detach().numpy()
    mean = head.point(params, scale).detach().numpy()
    p = r / (r + mean)  # scipy: success probability with mean r (1 - p) / p
    expected = -stats.nbinom.logpmf(counts.numpy(), r, p).mean()
    loss = head.loss(counts, params, torch.ones_like(counts), scale).item()
    assert loss == pytest.approx(expected, rel=1e-8)
    q = head.quantiles(params, (0.1, 0.9), scale).numpy()
    np.testing.assert_array_equal(q, stats.nbinom.ppf([0.1, 0.9], r[..., None], p[..., None]))


def test_unknown_head_raises():
    from xlstm_ts.heads import make_head

    with pytest.raises(ValueError, match="Unknown head"):
        make_head("gamma", 4, 2, (0.5,))
