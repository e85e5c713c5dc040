"""Integer helpers for the launchers that run on every call, a one-token decoding step
included, where a microsecond of Python is a visible share of the step.

`triton.cdiv` and `triton.next_power_of_2` are jit functions: about 2 µs a call from
Python on the development machine, against 0.03 µs for the same integer arithmetic.
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for positive integers."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1

