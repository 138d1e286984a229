"""Integer helpers for the host side of kernel launches, in plain Python.

`triton.cdiv` and friends are Triton constexpr functions: called from the host they go through Triton's wrapper and
cost microseconds each, a visible part of a small launch's host time. These are the same arithmetic.
"""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for positive ints."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n, for n >= 1."""
    return 1 << (n - 1).bit_length()
