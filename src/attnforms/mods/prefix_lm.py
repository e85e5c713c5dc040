"""Prefix LM: a bidirectional prefix, causal after it."""
from __future__ import annotations

from typing import Callable

import torch

from ._naming import check_captured, check_int, named


def prefix_lm(prefix_length: int | torch.Tensor) -> Callable:
    """`mask_mod` keeping `kv_idx < prefix` (everyone sees the whole prefix, the prefix
    sees itself bidirectionally) or `kv_idx <= q_idx` (causal elsewhere).

    The mask contains the causal part, so call `softmax_attention(..., causal=False)`
    with it (with `causal=True` the prefix would be causal too).

    Args:
        prefix_length: an int >= 0 shared by every row, or an integer tensor `[B]` with
            one prefix length per batch row (`[N]`, one per sequence, with `cu_seqlens`,
            where `b` is the sequence index). Must be on the device of the call.

    Source: Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer" (T5, 2020), the "prefix LM" attention pattern.
    """
    if isinstance(prefix_length, torch.Tensor):
        prefix = check_captured("prefix_length", prefix_length, ndims=(1,), floating=False)

        def prefix_lm_mask(b, h, q_idx, kv_idx):
            return (kv_idx < prefix[b]) | (kv_idx <= q_idx)

        return named(prefix_lm_mask, f"prefix_lm(tensor[{prefix.shape[0]}])")

    P = check_int("prefix_length", prefix_length, minimum=0)

    def prefix_lm_mask(b, h, q_idx, kv_idx):
        return (kv_idx < P) | (kv_idx <= q_idx)

    return named(prefix_lm_mask, f"prefix_lm({P})")
