"""Causal mask: a query sees keys at or before its position."""
from __future__ import annotations

from typing import Callable

from ._naming import named


def causal() -> Callable:
    """`mask_mod` keeping key `kv_idx` for query `q_idx` when `kv_idx <= q_idx`.

    The same visibility as `softmax_attention(causal=True)`; use it as a mask when
    combining with other masks (`or_masks(causal(), ...)`) or to build a `BlockMask`
    whose empty blocks the kernel skips. Positions are absolute, so with S != T the
    queries are bottom-right aligned exactly as with `causal=True`.

    Source: the autoregressive mask of Vaswani et al., "Attention Is All You Need" (2017).
    """

    def causal_mask(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    return named(causal_mask, "causal()")
