"""Argument validation that remembers what passed.

An op's checks (types, dtypes, shapes, devices, option values) cost more host time than
a decoding step's kernel at small batches: about 17 of the 30 µs of an mLSTM step's host
part on the CPU (scripts/host_overhead.py). They depend only on what `signature` keeps
of each argument, so a validator wrapped in `remembers_success` runs in full the first
time a signature is seen and is skipped, returning the same result, when it comes again.
A check that reads tensor *values* (cu_seqlens, the sign of a gate) cannot be
remembered: arguments named in `value_args` turn the memo off for the call when they are
not None, and value checks belong outside the wrapped function.
"""
from __future__ import annotations

import functools
import inspect

import torch

# Distinct signatures kept per validator before the memo starts over (a model sees a
# handful: prefill, decode, a few batch sizes).
MEMO_SIZE = 1024


class _Unremembered(Exception):
    """An argument `signature` cannot describe: validate in full, remember nothing."""


def signature(value):
    """What validation may look at, hashable: for a tensor its shape, dtype and device;
    for a tuple (state named tuples included) its type and its items' signatures; for
    None, bool, int, float, str the value with its type. Anything else raises
    `_Unremembered`."""
    if isinstance(value, _Tensor):
        return (value.shape, value.dtype, value.device)
    kind = type(value)
    if value is None or kind in _PLAIN:
        return (kind, value)
    if isinstance(value, tuple):
        return (kind, tuple([signature(item) for item in value]))
    raise _Unremembered


_Tensor = torch.Tensor
_PLAIN = frozenset((bool, int, float, str))


def remembers_success(value_args: tuple[str, ...] = ()):
    """Decorate a validator `f(*args)` (positional arguments only) so that a call whose
    arguments have a signature seen before, and whose `value_args` are all None, returns
    the earlier result without running the checks again. A call that raises is never
    remembered, so a bad call raises every time."""

    def decorate(validate):
        names = list(inspect.signature(validate).parameters)
        value_positions = tuple(names.index(name) for name in value_args)
        passed: dict = {}

        @functools.wraps(validate)
        def remembered(*args):
            if any(args[i] is not None for i in value_positions):
                return validate(*args)
            try:
                key = tuple([signature(a) for a in args])
            except _Unremembered:
                return validate(*args)
            try:
                return passed[key]
            except KeyError:
                pass
            result = validate(*args)
            if len(passed) >= MEMO_SIZE:
                passed.clear()
            passed[key] = result
            return result

        return remembered

    return decorate
