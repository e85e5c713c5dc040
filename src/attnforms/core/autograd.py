"""Calling an autograd Function only when something will be differentiated.

`Function.apply` costs about 7 µs a call even under `torch.no_grad()`, a visible share
of a one-token decoding step; without a gradient to record, the kernels' Functions run
their `forward` directly with a context that records nothing.
"""
from __future__ import annotations

import torch


def autograd_needed(*xs) -> bool:
    """Whether a call on `xs` must record for a backward: grad mode on and some tensor
    among them requiring a gradient (non-tensor entries, e.g. None, are skipped)."""
    if not torch.is_grad_enabled():
        return False
    for x in xs:  # a plain loop: a generator costs a decoding step about a microsecond more
        if isinstance(x, torch.Tensor) and x.requires_grad:
            return True
    return False


class _NoRecord:
    """What a Function's `forward` may use of its context when nothing is recorded:
    no input needs a gradient, saving is a no-op, and attributes it sets are kept."""

    def __init__(self, num_inputs: int):
        self.needs_input_grad = (False,) * num_inputs

    def save_for_backward(self, *tensors) -> None:
        pass


def apply_function(function: type[torch.autograd.Function], *args):
    """`function.apply(*args)`, or its forward alone when `autograd_needed(*args)` is
    False; the result is the same either way."""
    if autograd_needed(*args):
        return function.apply(*args)
    return function.forward(_NoRecord(len(args)), *args)
