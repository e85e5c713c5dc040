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

The bench gates such a peer's backward against the function here, and its ratios say
which gradient the peer computes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.constants import MLSTM_EPS


def mlstm_held_normaliser(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor, *,
                          input_gate: str) -> torch.Tensor:
    """The mLSTM without an initial state, its normaliser's factor and stabiliser held
    constant for the gradient (the value is `attnforms.mlstm`'s, scale `K ** -0.5`),
    in the parallel form: O(T²) memory, for the gate's short sequences.

    q, k: `[B, T, H, K]`, v: `[B, T, H, V]`, i, f: `[B, T, H]` gate pre-activations,
    computed in their dtype (float64 for a golden result). Returns `[B, T, H, V]`.
    """
    T = q.shape[1]
    scale = q.shape[-1] ** -0.5
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    b = torch.cumsum(F.logsigmoid(f.transpose(1, 2)), dim=-1)  # [B, H, T]
    li = i.transpose(1, 2) if input_gate == "exp" else F.logsigmoid(i.transpose(1, 2))
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    # [B, H, T, T]: log weight of token s's write when token r reads it, s <= r.
    log_gates = (b[..., :, None] - b[..., None, :] + li[..., None, :]).masked_fill(~causal, float("-inf"))
    if input_gate == "exp":
        m = log_gates.amax(dim=-1).detach()  # [B, H, T]
    else:
        m = torch.zeros_like(b)
    scores = (qh @ kh.transpose(-1, -2)) * scale * torch.exp(log_gates - m[..., None])
    num, den = scores @ vh, scores.sum(dim=-1)  # [B, H, T, V], [B, H, T]
    # 1 / (max(|den|, e^{-m}) + ε) as in the reference's _normalise, without forming e^{-m}.
    factor = torch.minimum(1.0 / (den.abs() + MLSTM_EPS), torch.sigmoid(m + math.log(MLSTM_EPS)) / MLSTM_EPS)
    return (num * factor.detach()[..., None]).transpose(1, 2)
