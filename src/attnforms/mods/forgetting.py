"""Forgetting attention (Forgetting Transformer): a data-dependent decay of the scores."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._naming import check_captured, named


def cumulative_log_forget(forget_logits: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """The cumulative log forget gate `F_t = Σ_{l <= t} log σ(f_l)` that `forgetting` reads.

    Args:
        forget_logits: `[B, T, H]` forget-gate pre-activations f (time-major, like the
            other gates of the library); `log σ(f) <= 0`.
        cu_seqlens: None, or `[N + 1]` offsets of N packed sequences (then B == 1): each
            sequence restarts its sum, matching `softmax_attention(cu_seqlens=...)`, where
            the mod sees b = the sequence index and positions from the sequence start.

    Returns:
        float32 (float64 for float64 input) `[B, H, T]`, or `[N, H, max_len]` with
        `cu_seqlens` (zero past each sequence's end). Differentiable.
    """
    check_captured("forget_logits", forget_logits, ndims=(3,), floating=True)
    dtype = torch.float64 if forget_logits.dtype == torch.float64 else torch.float32
    log_f = F.logsigmoid(forget_logits.to(dtype)).transpose(1, 2)  # [B, H, T]
    if cu_seqlens is None:
        return log_f.cumsum(dim=-1)
    if forget_logits.shape[0] != 1:
        raise ValueError(f"forget_logits: expected B == 1 with cu_seqlens, got B = {forget_logits.shape[0]}")
    bounds = [int(x) for x in cu_seqlens.tolist()]
    if bounds[0] != 0 or bounds[-1] != forget_logits.shape[1] or any(a > b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens: expected non-decreasing offsets from 0 to T = {forget_logits.shape[1]}, got {bounds}")
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    rows = [F.pad(log_f[0, :, a:b].cumsum(dim=-1), (0, longest - (b - a))) for a, b in zip(bounds, bounds[1:])]
    return torch.stack(rows)


def forgetting(cum_log_forget: torch.Tensor) -> Callable:
    """`score_mod` adding `F[b, h, q_idx] - F[b, h, kv_idx] = Σ_{kv < l <= q} log f_l`.

    The Forgetting Transformer's forgetting attention: each token has a forget gate
    `f_t = σ(w·x_t + b) ∈ (0, 1)` per head and the logit of key j for query i is
    `q_i·k_j + Σ_{l=j+1}^{i} log f_l`, a data-dependent decay (a softmax analogue of
    the gated linear recurrences). Written with the cumulative sum F, the bias is a
    difference, so it only means a decay for keys at or before the query: use it with
    `causal=True`. Gradients flow into `cum_log_forget` (and through it into the gate).

    Args:
        cum_log_forget: `[B, H, T]` float, `F_t = Σ_{l <= t} log f_l` (non-increasing
            along t); `cumulative_log_forget` computes it from gate pre-activations.
            With `cu_seqlens`, `[N, H, max_len]` indexed by sequence and local position.
            Indices are clamped into `[0, T - 1]` (empty cache slots read in bounds);
            positions must lie within T. On the device of the call.

    Numerics: F decreases without bound along the sequence, so in float32 the
    difference `F_q - F_kv` loses absolute precision of about `|F_T| · 1e-7` on long
    sequences with strong forgetting (the same trade-off as computing it from a
    cumulative sum in a kernel).

    Source: Lin, Nikishin, He, Courville, "Forgetting Transformer: Softmax Attention with
    a Forget Gate" (ICLR 2025). Not covered by the project's research notes; restated
    from the paper from memory (unverified there).
    """
    cum = check_captured("cum_log_forget", cum_log_forget, ndims=(3,), floating=True)
    last = cum.shape[-1] - 1

    def forgetting_bias(score, b, h, q_idx, kv_idx):
        q = torch.clamp(q_idx, 0, last)
        kv = torch.clamp(kv_idx, 0, last)
        return score + cum[b, h, q] - cum[b, h, kv]

    return named(forgetting_bias, f"forgetting(cum_log_forget[{', '.join(map(str, cum.shape))}])")
