"""The host-side integer helpers agree with Triton's own."""

import triton
from hypothesis import given
from hypothesis import strategies as st

from xlstm_ts.kernels._ints import cdiv, next_power_of_2


@given(st.integers(1, 10**7), st.integers(1, 4096))
def test_cdiv_matches_triton(a, b):
    assert cdiv(a, b) == triton.cdiv(a, b)


@given(st.integers(1, 10**7))
def test_next_power_of_2_matches_triton(n):
    assert next_power_of_2(n) == triton.next_power_of_2(n)
