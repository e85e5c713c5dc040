"""ALiBi: a per-head linear penalty on the query-key distance."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._naming import check_int, named


def alibi_slopes(num_heads: int) -> list[float]:
    """The ALiBi slope of each head, as Python floats (exact in float64).

    With n a power of two the slopes are the geometric sequence `2^(-8i/n)`, i = 1..n.
    Otherwise, with m the largest power of two below n, the slopes of m heads come first,
    followed by every other slope of the 2m-head sequence (`2^(-4(2j+1)/m)`, j = 0..n-m-1)
    as in the paper's reference implementation.
    """
    check_int("num_heads", num_heads, minimum=1)

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    if num_heads & (num_heads - 1) == 0:
        return geometric(num_heads)
    m = 2 ** int(math.floor(math.log2(num_heads)))
    return geometric(m) + geometric(2 * m)[0::2][: num_heads - m]


def alibi(num_heads: int, *, bidirectional: bool = False, device=None,
          dtype: torch.dtype = torch.float32) -> Callable:
    """`score_mod` adding `-slope[h] · (q_idx - kv_idx)` (ALiBi).

    Causal ALiBi penalises a key by its distance behind the query; for keys ahead of the
    query (only visible without causality) the bias would be a bonus, so for
    bidirectional attention pass `bidirectional=True`, which uses `-slope[h] · |q_idx -
    kv_idx|` (a symmetric extension used by encoder models, not in the paper). Combine
    with `causal=True` for the paper's setting.

    Args:
        num_heads: H, the query heads of the call (h indexes `[H]` slopes).
        bidirectional: penalise distance in both directions.
        device: where the slope table lives; the call's device.
        dtype: of the slope table (the bias is computed in the promotion of this and the
            score dtype; the reference casts the result back to its compute dtype).

    Source: Press, Smith, Lewis, "Train Short, Test Long: Attention with Linear Biases
    Enables Input Length Extrapolation" (ICLR 2022). Restated from the paper and its
    reference code from memory; ALiBi is not covered by the project's research notes, so
    the non-power-of-two schedule is unverified there (tested against the formula above).
    """
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional: expected a bool, got {type(bidirectional).__name__}")
    slopes = torch.tensor(alibi_slopes(num_heads), dtype=torch.float64).to(device=device, dtype=dtype)

    if bidirectional:

        def alibi_bias(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * torch.abs(q_idx - kv_idx)

        return named(alibi_bias, f"alibi({num_heads}, bidirectional=True)")

    def alibi_bias(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx)

    return named(alibi_bias, f"alibi({num_heads})")
