"""The noise-relative error rule used by every correctness check.

A low-precision result is judged against a float64 golden result, relative to the error
eager PyTorch makes in the same dtype: `err(candidate) <= factor * err(eager) + atol`.
The bound tracks the real noise floor of each shape and dtype, so no tolerance is tuned
by hand (the rule of flash-attention's and FlexAttention's tests).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


def max_error(actual: torch.Tensor, golden: torch.Tensor) -> float:
    """Largest absolute difference, computed in float64."""
    return (actual.double() - golden.double()).abs().max().item() if actual.numel() else 0.0


class NoiseCheck(NamedTuple):
    """Outcome of `noise_relative_check`: the two errors, the bound and the verdict."""

    error: float
    eager_error: float
    bound: float
    passed: bool


def ulp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of each element of `x` in `dtype` (float64 result)."""
    _, exponent = torch.frexp(x.double())
    return torch.finfo(dtype).eps * torch.pow(2.0, exponent.double() - 1)


def noise_relative_check(
    candidate: torch.Tensor, golden: torch.Tensor, eager: torch.Tensor, *,
    factor: float = 2.0, atol: float = 1e-6, rounding: torch.dtype | None = None,
) -> NoiseCheck:
    """Compare `candidate` with `golden` (float64), allowing `factor` times the error of
    `eager` (the reference run in the candidate's dtype) plus `atol`.

    rounding: the dtype both results were rounded to at the end. Two computations that
    agree to float32 precision can still round an element that sits near a rounding
    boundary in opposite directions, so each element of the candidate may differ by one
    unit in the last place of that element on top of the bound.
    """
    error, eager_error = max_error(candidate, golden), max_error(eager, golden)
    if rounding is not None and candidate.numel():
        excess = (candidate.double() - golden.double()).abs() - ulp(golden, rounding)
        error = max(excess.max().item(), 0.0)
    bound = factor * eager_error + atol
    return NoiseCheck(error, eager_error, bound, error <= bound)
