"""Causal sliding window: a query sees its last `window` positions, itself included."""
from __future__ import annotations

from typing import Callable

from ._naming import check_int, named


def sliding_window(window: int) -> Callable:
    """`mask_mod` keeping `q_idx - window < kv_idx <= q_idx`.

    Args:
        window: W >= 1, the number of positions a query sees (itself included); the
            semantics of `softmax_attention(window=W)`, written as a mask so that it
            composes with other masks and feeds `create_block_mask`.

    Source: local attention as in Longformer (Beltagy et al., 2020) and Mistral 7B
    (Jiang et al., 2023), causal one-sided form.
    """
    W = check_int("window", window, minimum=1)

    def sliding_window_mask(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (kv_idx > q_idx - W)

    return named(sliding_window_mask, f"sliding_window({W})")
