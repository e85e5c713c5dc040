"""Triton kernels of the mLSTM: the chunk form (TFLA's two-level tiling), forward and
backward, and the recurrent form (a fused step for decoding), for both input gates;
optionally (`launch.SIGMOID_VIA_GLA`) the sigmoid gate's chunk form on the gated delta
rule family's scalar-gate kernels (sigmoid_as_gla.py).

The entry points take the reference forms' signature (plus native `offsets` for packed
sequences) and return `AttentionOutput`. They never import `reference.py`.
"""
from __future__ import annotations

import torch

from ....core.states import AttentionOutput, MLSTMState
from ....core.autograd import apply_function, autograd_needed
from ..options import held_gradient
from . import launch, sigmoid_as_gla

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def _check(q, v, chunk_size=None):
    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q: impl='triton' takes float16, bfloat16 or float32 inputs, got {q.dtype}")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f"q, v: impl='triton' takes head dims K, V <= {MAX_HEAD_DIM}, "
                         f"got K = {q.shape[-1]}, V = {v.shape[-1]}")
    if chunk_size is not None and chunk_size not in launch.CHUNK_SIZES:
        raise ValueError(f"chunk_size: impl='triton' takes one of {launch.CHUNK_SIZES}, got {chunk_size}")


def _initial(state):
    if state is None:
        return None, None, None
    return tuple(x.float().contiguous() for x in state)


def _grad_needed(ctx):
    return any(ctx.needs_input_grad[:8])


class _ChunkFunction(torch.autograd.Function):
    """Autograd boundary of the chunk kernels: with `training` the forward keeps its
    intermediates and (unless `held`, whose backward has no row terms) the float32
    output the backward's row terms read.

    `training` comes from the caller (`autograd_needed`): inside `forward` grad mode is
    always off and `ctx.needs_input_grad` reports inputs that require a gradient even
    under `torch.no_grad()`, where no backward can run (session 15 found inference under
    no_grad paying the training forward: the float32 output, its copy, the saved states)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, scale, stabilise, offsets, chunk_size, output_final_state,
                training, held):
        initial = None if C0 is None else (C0, n0, m0)
        o, final, saved = launch.chunk_forward(
            q, k, v, i, f, scale, stabilise, initial, output_final_state or training, offsets,
            chunk_size, out_dtype=torch.float32 if training and not held else None, save=training)
        o32 = o  # read by the backward only for its row terms (none when held)
        o = o.to(v.dtype)
        if training:
            ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, o32, *saved[:-1], *saved.final)
        ctx.options = (scale, stabilise, offsets, chunk_size, held)
        final = final if output_final_state else (None, None, None)
        return (o, *final)

    @staticmethod
    def backward(ctx, do, dC, dn, dm):
        q, k, v, i, f, C0, n0, m0, o32, *rest = ctx.saved_tensors
        scale, stabilise, offsets, chunk_size, held = ctx.options
        saved = launch.Saved(*rest[:7], tuple(rest[7:]))
        initial = None if C0 is None else (C0, n0, m0)
        do = torch.zeros_like(o32) if do is None else do
        grads = launch.chunk_backward(q, k, v, i, f, scale, stabilise, initial, saved, o32, do,
                                      (dC, dn, dm), offsets, chunk_size, held=held)
        return (*grads, None, None, None, None, None, None, None)


def _result(o, C, n, m, output_final_state):
    return AttentionOutput(o, MLSTMState(C, n, m) if output_final_state else None)


def chunk(q, k, v, i, f, *, input_gate, scale, initial_state, output_final_state, chunk_size,
          normaliser_gradient="exact", offsets=None):
    """Chunk form on Triton kernels; arguments as in the reference forms. `chunk_size`
    None takes the launcher's `default_chunk` for the gate."""
    held = held_gradient(normaliser_gradient)
    if input_gate == "sigmoid" and launch.SIGMOID_VIA_GLA and v.shape[-1] < MAX_HEAD_DIM and not held:
        # The same function on the scalar-gate linear-attention kernels (their own chunk;
        # V + 1 value columns, hence V < 256).
        _check(q, v)
        return sigmoid_as_gla.chunk(q, k, v, i, f, scale=scale, initial_state=initial_state,
                                    output_final_state=output_final_state, offsets=offsets)
    chunk_size = chunk_size or launch.default_chunk(input_gate == "exp")
    _check(q, v, chunk_size)
    initial = _initial(initial_state)
    out = _ChunkFunction.apply(q, k, v, i, f, *initial, scale, input_gate == "exp",
                               offsets, chunk_size, output_final_state, autograd_needed(q, k, v, i, f, *initial),
                               held)
    return _result(*out, output_final_state)


class _RecurrentFunction(torch.autograd.Function):
    """Autograd boundary of the recurrent kernel. It computes the same function as the
    chunk form, so its backward recomputes the chunk intermediates and runs the chunk
    backward kernels (the recurrent form serves decoding, where the forward matters)."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, scale, stabilise, offsets, output_final_state, held):
        initial = None if C0 is None else (C0, n0, m0)
        o, final = launch.recurrent_forward(q, k, v, i, f, scale, stabilise, initial,
                                            output_final_state, offsets)
        if _grad_needed(ctx):
            ctx.save_for_backward(q, k, v, i, f, C0, n0, m0)
        ctx.options = (scale, stabilise, offsets, held)
        return (o, *(final if output_final_state else (None, None, None)))

    @staticmethod
    def backward(ctx, do, dC, dn, dm):
        q, k, v, i, f, C0, n0, m0 = ctx.saved_tensors
        scale, stabilise, offsets, held = ctx.options
        initial = None if C0 is None else (C0, n0, m0)
        o32, _, saved = launch.chunk_forward(q, k, v, i, f, scale, stabilise, initial, True, offsets,
                                             launch.default_chunk(stabilise),
                                             out_dtype=None if held else torch.float32)
        do = torch.zeros_like(o32) if do is None else do
        grads = launch.chunk_backward(q, k, v, i, f, scale, stabilise, initial, saved, o32, do,
                                      (dC, dn, dm), offsets, launch.default_chunk(stabilise), held=held)
        return (*grads, None, None, None, None, None)


def recurrent(q, k, v, i, f, *, input_gate, scale, initial_state, output_final_state, chunk_size,
              normaliser_gradient="exact", offsets=None):
    """Recurrent form in one Triton launch; arguments as in the reference forms."""
    _check(q, v)
    out = apply_function(_RecurrentFunction, q, k, v, i, f, *_initial(initial_state), scale, input_gate == "exp",
                         offsets, output_final_state, held_gradient(normaliser_gradient))
    return _result(*out, output_final_state)


for _entry in (chunk, recurrent):
    _entry.native_varlen = True
