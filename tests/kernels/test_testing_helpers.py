"""The comparison helpers in xlstm_ts.kernels._testing."""

import pytest
import torch

from xlstm_ts.kernels._testing import TOLERANCES, assert_close, err_ratio, tolerance


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
