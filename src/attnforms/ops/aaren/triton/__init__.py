"""Triton kernels of Aaren: the prefix scan over the softmax triple (chunk form),
forward and backward, and a fused recurrent step for decoding.

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences) and return `AttentionOutput`. They never import `reference.py`.
"""
from __future__ import annotations

import torch

from ....core.states import AarenState, AttentionOutput
from ....core.autograd import apply_function
from . import launch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def _check(q, v):
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q: impl='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f"q, v: impl='triton' takes head dims K, V <= {MAX_HEAD_DIM}, "
                         f"got K = {q.shape[-1]}, V = {v.shape[-1]}")


def _initial(state):
    return (None,) * 3 if state is None else tuple(x.float().contiguous() for x in state)


class _ScanFunction(torch.autograd.Function):
    """Autograd boundary of the scan kernels; `recompute` marks the recurrent form, which
    keeps nothing and reruns the chunk forward in its backward."""

    @staticmethod
    def forward(ctx, q, k, v, m0, u0, w0, scale, offsets, output_final_state, recurrent):
        training = any(ctx.needs_input_grad[:6])
        initial = None if m0 is None else (m0, u0, w0)
        store_final = output_final_state or training
        if recurrent:
            o, final = launch.recurrent_forward(q, k, v, scale, initial, store_final, offsets)
            saved = (None,) * 5
        else:
            o, final, saved = launch.forward(q, k, v, scale, initial, store_final, offsets)
        if training:
            ctx.save_for_backward(q, k, v, m0, u0, w0, *saved, *final)
        ctx.options = (scale, offsets, recurrent)
        return (o, *(final if output_final_state else (None,) * 3))

    @staticmethod
    def backward(ctx, do, dm, du, dw):
        q, k, v, m0, u0, w0, *saved = ctx.saved_tensors
        saved, final = saved[:5], saved[5:]
        scale, offsets, recurrent = ctx.options
        initial = None if m0 is None else (m0, u0, w0)
        if recurrent:
            _, final, saved = launch.forward(q, k, v, scale, initial, True, offsets)
        do = torch.zeros_like(v) if do is None else do
        grads = launch.backward(q, k, v, scale, initial, saved, final, do, (dm, du, dw), offsets)
        return (*grads, None, None, None, None)


def _run(q, k, v, scale, initial_state, output_final_state, offsets, recurrent):
    _check(q, v)
    o, m, u, w = apply_function(_ScanFunction, q, k, v, *_initial(initial_state), scale, offsets,
                                output_final_state, recurrent)
    return AttentionOutput(o, AarenState(m, u, w) if output_final_state else None)


def chunk(q, k, v, *, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Chunk form (the scan kernels); arguments as in the reference forms. The kernels'
    own chunk (`launch.CHUNK`) is used whatever `chunk_size` says: the function is the
    same for every chunk size."""
    return _run(q, k, v, scale, initial_state, output_final_state, offsets, recurrent=False)


def recurrent(q, k, v, *, scale, initial_state, output_final_state, chunk_size, offsets=None):
    """Recurrent form in one Triton launch; arguments as in the reference forms."""
    return _run(q, k, v, scale, initial_state, output_final_state, offsets, recurrent=True)


for _entry in (chunk, recurrent):
    _entry.native_varlen = True
