"""Readable names for the mods the factories return (shown by `BlockMask.__repr__`,
error messages and test ids), and the checks the factories share."""
from __future__ import annotations

from typing import Callable

import torch


def named(mod: Callable, name: str) -> Callable:
    """Give `mod` the name `name` (e.g. "sliding_window(64)") and return it."""
    mod.__name__ = name
    mod.__qualname__ = name
    return mod


def describe(mod: Callable) -> str:
    """The name a factory gave `mod`, or the function's own name."""
    return getattr(mod, "__name__", None) or repr(mod)


def check_int(name: str, value, *, minimum: int) -> int:
    """A Python int (bools refused) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__} {value!r}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}: expected a finite positive number, got {value}")
    return float(value)


def check_captured(name: str, x, *, ndims: tuple[int, ...], floating: bool | None = None) -> torch.Tensor:
    """A tensor the mod will index: right rank and kind of dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ndims:
        wanted = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name}: expected {wanted} dimensions, got shape {list(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name}: expected an integer or bool dtype, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {list(x.shape)}")
    return x
