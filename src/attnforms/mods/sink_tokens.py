"""StreamingLLM: the first few tokens (attention sinks) plus a sliding window."""
from __future__ import annotations

from typing import Callable

from ._naming import check_int, named


def sink_tokens(n_sinks: int, window: int) -> Callable:
    """`mask_mod` keeping, causally, the first `n_sinks` positions and the last `window`
    positions: `kv_idx <= q_idx` and (`kv_idx < n_sinks` or `kv_idx > q_idx - window`).

    Args:
        n_sinks: tokens at the start of the stream every query keeps seeing (StreamingLLM
            uses 4).
        window: W >= 1, the recent positions seen, the query itself included (the
            `sliding_window(W)` semantics), e.g. 1020 with 4 sinks for a 1024-slot cache.

    This is the attention pattern only. StreamingLLM also re-numbers positions inside the
    cache for the positional encoding (RoPE sees cache slots, not original positions);
    that is a property of how q and k are rotated, outside the mask. The gpt-oss style
    learned sink logit is the `sinks=` argument of `softmax_attention`, not this mask.

    Source: Xiao et al., "Efficient Streaming Language Models with Attention Sinks"
    (ICLR 2024); research note §12a (4 sink tokens + recent window).
    """
    n = check_int("n_sinks", n_sinks, minimum=0)
    W = check_int("window", window, minimum=1)

    def sink_tokens_mask(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & ((kv_idx < n) | (kv_idx > q_idx - W))

    return named(sink_tokens_mask, f"sink_tokens({n}, window={W})")
