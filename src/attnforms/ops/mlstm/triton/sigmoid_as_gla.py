"""mLSTMsig (`input_gate="sigmoid"`) on the gated delta rule family's scalar-gate kernels.

With the sigmoid input gate the stabiliser m stays 0 (reference.py), and the cell is
linear attention with a per-head decay and a per-token write weight σ(i_t) <= 1:

    [C | n]_t = σ(f_t) [C | n]_{t-1} + (σ(i_t) k_t) [v_t | 1]ᵀ
    h_t       = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, 1) + MLSTM_EPS)

So one `gated_delta_rule` chunk call (no beta) with log-decay g = logsigmoid(f), keys
σ(i) ⊙ k and values [v | 1 | 0...] (column V carries n; zeros pad the columns to a
multiple of VALUE_COLUMNS) returns numerator and denominator at once, in float32;
the division is PyTorch, and autograd runs the kernels' backward through it. An entering state (C₀, n₀, m₀) enters as
exp(m₀)·[C₀ | n₀], as the reference reads it (its first step weighs the state by
exp(lf₁ + m₀)); the API only admits m₀ = 0 for this gate, but the factor gives m₀ the
reference's gradient. The final state leaves with m = 0.

It is an alternative to the mLSTM kernels (chunk_fwd.py, chunk_bwd.py) for the
sigmoid gate, chosen by `launch.SIGMOID_VIA_GLA`: the scalar-gate kernels are the
faster ones on the GPU (bench/NOTES-mlstm.md), at the price of σ(i) ⊙ k rounded to the
inputs' 16-bit dtype as a kernel input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ....core.constants import MLSTM_EPS
from ....core.states import AttentionOutput, LinearState, MLSTMState
from ...gated_delta import triton as gated_delta_kernels

# The gated delta kernels' chunk (their largest).
CHUNK_SIZE = 64
# The value columns are padded to a multiple of this: the kernels' value tile at K = 128
# (scripts/compile_sm90.py "gdr K128 V192": no spills, against 2548 bytes at V 129).
VALUE_COLUMNS = 64


def chunk(q, k, v, i, f, *, scale, initial_state, output_final_state, offsets=None) -> AttentionOutput:
    """mLSTMsig's chunk form: q, k `[B, T, H, K]`, v `[B, T, H, V]`, i, f `[B, T, H]`
    gate pre-activations, initial_state MLSTMState or None. Returns the output
    `[B, T, H, V]` in v's dtype and, when asked, MLSTMState(C, n, m = 0)."""
    V = v.shape[-1]
    g = F.logsigmoid(f.float())  # [B, T, H], <= 0
    keys = (k.float() * torch.sigmoid(i.float())[..., None]).to(k.dtype)
    # [B, T, H, V + 1 + pad]: v, the ones column that carries n, and zero columns up to a
    # multiple of VALUE_COLUMNS. A ragged last value tile keeps per-element masks live in
    # the kernels' registers (V + 1 = 129 at K = 128: 2.5 KB of spills in the forward,
    # whose 1.26 ms at S1 made this path slower than the mLSTM kernels).
    pad = -(V + 1) % VALUE_COLUMNS
    values = torch.cat([v, torch.ones_like(v[..., :1]), v.new_zeros(*v.shape[:-1], pad)], dim=-1)
    state = None
    if initial_state is not None:
        C0, n0, m0 = (x.float() for x in initial_state)
        S0 = torch.cat([C0, n0[..., None], C0.new_zeros(*C0.shape[:-1], pad)], dim=-1)
        state = LinearState(torch.exp(m0)[..., None, None] * S0)
    out = gated_delta_kernels.chunk(q, keys, values, g=g, beta=None, scale=scale, initial_state=state,
                                    output_final_state=output_final_state, chunk_size=CHUNK_SIZE,
                                    offsets=offsets, out_dtype=torch.float32)
    num, den = out.output[..., :V], out.output[..., V]
    h = num / (torch.maximum(den.abs(), torch.ones_like(den)) + MLSTM_EPS)[..., None]
    final = None
    if output_final_state:
        S = out.final_state.S  # [N, H, K, V + 1 + pad]
        final = MLSTMState(S[..., :V], S[..., V], torch.zeros(S.shape[:2], dtype=S.dtype, device=S.device))
    return AttentionOutput(h.to(v.dtype), final)
