"""Triton kernels of the gated delta rule: the chunk form (forward and backward) and the
recurrent form (forward).

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences) and return `AttentionOutput`. They never import `reference.py`.
Each entry's `backward_refusal(inputs)` says why it cannot differentiate those inputs
(None when it can): `impl="auto"` then keeps the reference when gradients are needed,
and an explicit `impl="triton"` raises `ImplUnavailableError` with that reason.
"""
from __future__ import annotations

import torch

from ....core.states import AttentionOutput, LinearState
from .launch import ChunkIntermediates, chunk_backward, chunk_forward, recurrent_forward

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CHUNK_SIZES = (16, 32, 64)


def _check(q, chunk_size=None):
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q: impl='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}")
    if chunk_size is not None and chunk_size not in CHUNK_SIZES:
        raise ValueError(f"chunk_size: impl='triton' takes one of {CHUNK_SIZES}, got {chunk_size}")


def _initial(initial_state):
    return None if initial_state is None else initial_state.S.float().contiguous()


class _ChunkFunction(torch.autograd.Function):
    """Autograd boundary of the chunk kernels: the forward keeps its intermediates."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, initial, scale, offsets, chunk_size, output_final_state):
        o, final, saved = chunk_forward(q, k, v, g, beta, scale, initial, output_final_state, offsets, chunk_size)
        ctx.save_for_backward(q, k, v, g, beta, initial, *saved)
        ctx.options = (scale, offsets, chunk_size)
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, g, beta, initial, *saved = ctx.saved_tensors
        scale, offsets, chunk_size = ctx.options
        grads = chunk_backward(q, k, v, g, beta, scale, initial, ChunkIntermediates(*saved),
                               do, dfinal, offsets, chunk_size)
        return (*grads, None, None, None, None)


def chunk(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Chunk form on Triton kernels; arguments as in the reference forms."""
    _check(q, chunk_size)
    o, final = _ChunkFunction.apply(q, k, v, g, beta, _initial(initial_state), scale, offsets,
                                    chunk_size, output_final_state)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


def recurrent(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Recurrent form in one Triton launch; arguments as in the reference forms."""
    _check(q)
    o, final = recurrent_forward(q, k, v, g, beta, scale, _initial(initial_state), output_final_state, offsets)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


chunk.backward_refusal = lambda inputs: None
recurrent.backward_refusal = lambda inputs: "the recurrent form has no Triton backward yet"
for _entry in (chunk, recurrent):
    _entry.native_varlen = True
