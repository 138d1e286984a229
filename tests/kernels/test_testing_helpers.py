"""The comparison helpers in xlstm_ts.kernels._testing."""

import pytest
import torch

from xlstm_ts.kernels._testing import TOLERANCES, assert_close, err_ratio, rounding_floor, tolerance


def test_every_tolerance_has_a_reason():
    for key, entry in TOLERANCES.items():
        assert 0 < entry.ratio < 1 and entry.reason.strip(), key


def test_tolerance_lookup():
    assert tolerance(torch.float32) == TOLERANCES["float32"].ratio
    assert tolerance(torch.bfloat16, grad=True) == TOLERANCES["bfloat16-grad"].ratio
    with pytest.raises(ValueError, match="No tolerance for 'int8'"):
        tolerance(torch.int8)


def test_err_ratio_is_relative_rms():
    ref = torch.tensor([3.0, 4.0])
    assert err_ratio(ref, ref) == 0.0
    assert err_ratio(ref, ref * 1.01) == pytest.approx(0.01, rel=1e-6)


def test_rounding_floor_stays_below_the_table_in_the_normal_range_and_covers_subnormals():
    torch.manual_seed(0)
    ref = torch.randn(4096, dtype=torch.float64)
    assert rounding_floor(ref, torch.float32) < 1e-7
    assert rounding_floor(ref, torch.float16) < 1e-3 < TOLERANCES["float16"].ratio
    assert rounding_floor(ref, torch.bfloat16) < 5e-3 < TOLERANCES["bfloat16"].ratio
    tiny = ref * 1e-6  # fp16 subnormals: a spacing of 6e-8, about 5 % of these values
    assert rounding_floor(tiny, torch.float16) > TOLERANCES["float16"].ratio
    assert assert_close("h", tiny, tiny.half(), rounding_floor(tiny, torch.float16)) > 0  # rounding itself passes


def test_assert_close_passes_and_returns_ratio():
    torch.manual_seed(42)
    ref = torch.randn(10)
    assert assert_close("x", ref, ref + 1e-9, 1e-6) < 1e-6


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_assert_close_fails_on_non_finite(bad):
    ref = torch.ones(4)
    out = ref.clone()
    out[1] = bad
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("x", ref, out, 1.0)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("x", out, ref, 1.0)


def test_assert_close_fails_above_ratio_and_on_shape():
    ref = torch.ones(4)
    with pytest.raises(AssertionError, match="error ratio"):
        assert_close("x", ref, ref * 1.1, 1e-2)
    with pytest.raises(AssertionError, match="shape"):
        assert_close("x", ref, ref[:3], 1.0)


def test_slstm_tie_free_moves_input_gates_off_stabilizer_ties():
    from xlstm_ts.kernels._testing import slstm_stabilizer_margins, slstm_tie_free

    torch.manual_seed(0)
    B, S, NH, DH = 2, 3, 1, 4
    wx = torch.randn(B, S, 4, NH, DH, dtype=torch.float64)  # (B, S, 4, NH, DH)
    r, b = torch.zeros(NH, 4, DH, DH, dtype=torch.float64), torch.zeros(NH, 4, DH, dtype=torch.float64)
    h0, c0, n0, m0 = torch.zeros(B, NH, DH), torch.zeros(B, NH, DH), torch.ones(B, NH, DH), torch.randn(B, NH, DH)
    states = (h0, c0, n0, m0)
    # step 0 ties exactly: i~ = log sigmoid(f~) + m0 (r = 0, b = 0)
    wx[:, 0, 0] = torch.nn.functional.logsigmoid(wx[:, 0, 1]) + m0.double()
    assert slstm_stabilizer_margins(wx, r, b, states)[:, 0].abs().max() < 1e-12
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        out = slstm_tie_free(wx, r, b, states, dtype, margin=0.05)
        assert torch.equal(out, out.to(dtype).double())  # representable in dtype
        assert slstm_stabilizer_margins(out, r, b, states).abs().min() >= 0.05
        assert torch.equal(out[:, :, 1:], wx[:, :, 1:].to(dtype).double())  # only the input-gate parts move
    # no states: m_0 = -inf, the first step has no tie to move
    assert torch.isinf(slstm_stabilizer_margins(wx, r, b, None)[:, 0]).all()


def test_products_h_bounds_h_and_equals_it_without_signs():
    from xlstm_ts.kernels._testing import make_mlstm_inputs, make_mlstm_states
    from xlstm_ts.kernels._testing_mlstm import naive_mlstm, products_h

    torch.manual_seed(3)
    q, k, v, i, f = make_mlstm_inputs(2, 1, 9, 5, 4)
    states = make_mlstm_states(2, 1, 5, 4)
    h, _, _ = naive_mlstm(q, k, v, i, f, *states)
    bound = products_h(q, k, v, i, f, *states)
    assert bound.shape == h.shape and (bound >= h.abs() - 1e-12).all() and (bound > 2 * h.abs()).any()
    C0, n0, m0 = states
    positive = [x.abs() for x in (q, k, v)]
    h_pos, _, _ = naive_mlstm(*positive, i, f, C0.abs(), n0.abs(), m0)
    assert torch.allclose(products_h(*positive, i, f, C0.abs(), n0.abs(), m0), h_pos, rtol=1e-12, atol=0)
