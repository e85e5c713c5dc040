"""Triton kernels of the gated delta rule: the chunk and recurrent forms, forward.

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences) and return `AttentionOutput`. They never import `reference.py`.
Backward kernels have not landed yet: the entries declare `supports_backward = False`, so
`impl="auto"` keeps the reference when gradients are needed and an explicit
`impl="triton"` with gradients raises `ImplUnavailableError`.
"""
from __future__ import annotations

import torch

from ....core.states import AttentionOutput, LinearState
from .launch import chunk_forward, recurrent_forward

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CHUNK_SIZES = (16, 32, 64)


def _check(q, chunk_size=None):
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q: impl='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}")
    if chunk_size is not None and chunk_size not in CHUNK_SIZES:
        raise ValueError(f"chunk_size: impl='triton' takes one of {CHUNK_SIZES}, got {chunk_size}")


def _initial(initial_state):
    return None if initial_state is None else initial_state.S.float().contiguous()


def chunk(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Chunk form on Triton kernels; arguments as in the reference forms."""
    _check(q, chunk_size)
    o, final = chunk_forward(q, k, v, g, beta, scale, _initial(initial_state), output_final_state, offsets, chunk_size)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


def recurrent(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Recurrent form in one Triton launch; arguments as in the reference forms."""
    _check(q)
    o, final = recurrent_forward(q, k, v, g, beta, scale, _initial(initial_state), output_final_state, offsets)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


for _entry in (chunk, recurrent):
    _entry.native_varlen = True
    _entry.supports_backward = False
