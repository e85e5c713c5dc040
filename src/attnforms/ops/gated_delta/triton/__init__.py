"""Triton kernels of the gated delta rule: the chunk and recurrent forms, forward and
backward, for every gate layout and with or without beta.

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences) and return `AttentionOutput`. They never import `reference.py`.
"""
from __future__ import annotations

import torch

from ....core.states import AttentionOutput, LinearState
from ....core.autograd import apply_function, autograd_needed
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
    def forward(ctx, q, k, v, g, beta, initial, scale, offsets, chunk_size, output_final_state, save, out_dtype):
        o, final, saved = chunk_forward(q, k, v, g, beta, scale, initial, output_final_state, offsets,
                                        chunk_size, save=save, out_dtype=out_dtype)
        ctx.save_for_backward(q, k, v, g, beta, initial, *(saved or ()))
        ctx.options = (scale, offsets, chunk_size)
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, g, beta, initial, *saved = ctx.saved_tensors
        scale, offsets, chunk_size = ctx.options
        grads = chunk_backward(q, k, v, g, beta, scale, initial, ChunkIntermediates(*saved),
                               do, dfinal, offsets, chunk_size)
        return (*grads, None, None, None, None, None, None)


def chunk(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None,
          out_dtype=None):
    """Chunk form on Triton kernels; arguments as in the reference forms. out_dtype: the
    output's dtype (default v's; float32 for a caller that post-processes it)."""
    _check(q, chunk_size)
    initial = _initial(initial_state)
    # The intermediates are kept only when a backward can run.
    save = autograd_needed(q, k, v, g, beta, initial)
    o, final = _ChunkFunction.apply(q, k, v, g, beta, initial, scale, offsets, chunk_size,
                                    output_final_state, save, out_dtype)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


class _RecurrentFunction(torch.autograd.Function):
    """Autograd boundary of the recurrent kernel. It computes the same function as the
    chunk form, so its backward recomputes the chunk intermediates and runs the chunk
    backward kernels (the recurrent form serves decoding, where the forward matters)."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, initial, scale, offsets, output_final_state):
        o, final = recurrent_forward(q, k, v, g, beta, scale, initial, output_final_state, offsets)
        ctx.save_for_backward(q, k, v, g, beta, initial)
        ctx.options = (scale, offsets)
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, g, beta, initial = ctx.saved_tensors
        scale, offsets = ctx.options
        chunk_size = CHUNK_SIZES[-1]
        _, _, saved = chunk_forward(q, k, v, g, beta, scale, initial, False, offsets, chunk_size)
        grads = chunk_backward(q, k, v, g, beta, scale, initial, saved, do, dfinal, offsets, chunk_size)
        return (*grads, None, None, None)


def recurrent(q, k, v, *, g, beta, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Recurrent form in one Triton launch; arguments as in the reference forms."""
    _check(q)
    o, final = apply_function(_RecurrentFunction, q, k, v, g, beta, _initial(initial_state), scale, offsets,
                              output_final_state)
    return AttentionOutput(o, LinearState(final) if output_final_state else None)


def recurrent_update_(q, k, v, *, g, beta, scale, state: LinearState, offsets=None) -> torch.Tensor:
    """The recurrent kernel writing the final state over `state.S` (float32, contiguous):
    decoding with a caller-owned cache allocates nothing but the output. No autograd.
    Returns the output `[B, T, H, V]`."""
    _check(q)
    o, _ = recurrent_forward(q, k, v, g, beta, scale, state.S, True, offsets, final_out=state.S)
    return o


for _entry in (chunk, recurrent):
    _entry.native_varlen = True
