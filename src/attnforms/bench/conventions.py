"""Functions whose gradients peers compute where those differ from the op's own.

mlstm_kernels' chunk kernels (TFLA, `chunkwise--triton_xl_chunk` and `..._siging`, and
its pure-PyTorch `*_custbw` forms) return the mLSTM's output exactly, but their backward
is the gradient of the mLSTM with the normaliser's factor `1 / (max(|n·q̂|, e^{-m}) + ε)`
and the stabiliser `m` held constant: their dv is the exact gradient, their dq, dk, di,
df are not. Established on the CPU (Triton's interpreter, float32, T 128, K = V = 64;
bench/NOTES-mlstm.md, session 15): against attnforms' float64 reference their gradients
differ by the size of the gradients themselves, and against this function they agree to
float32 noise; mlstm_kernels' own `*_autograd` forms agree with attnforms' exact
gradient. (Before that run the failure on the GPU had been taken for the Hopper compiler
fault flash-linear-attention reports in its issue 640.)

attnforms offers that gradient too (`mlstm(normaliser_gradient="held")`); the bench
gates such a peer's backward against it, and its ratios say which gradient the peer
computes.
"""
from __future__ import annotations

import torch

from ..ops.mlstm import mlstm

# How the tables name that gradient (peers.Runner.gradient_of, linear.SequenceOp.gradient_of).
HELD_NORMALISER = "gradient with the normaliser held constant"


def mlstm_held_normaliser(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor, *,
                          input_gate: str) -> torch.Tensor:
    """The mLSTM without an initial state whose gradient holds the normaliser and the
    stabiliser constant (`mlstm(normaliser_gradient="held")`, the reference's chunk
    form; the value is the mLSTM's), scale `K ** -0.5`, computed in the inputs' dtype
    (float64 for a golden result).

    q, k: `[B, T, H, K]`, v: `[B, T, H, V]`, i, f: `[B, T, H]` gate pre-activations.
    Returns `[B, T, H, V]`.
    """
    return mlstm(q, k, v, i, f, input_gate=input_gate, normaliser_gradient="held", impl="reference",
                 form="chunk").output
