"""What a layer carries from one call to the next, and what every layer returns.

A layer's cache is what decoding needs besides the new tokens:

- softmax layers (`Attention`): the op's own `KVCache` (`attnforms.core.states`), which
  grows by one slot per token, or is bounded by `window - 1` slots with a sliding window;
- `MultiHeadLatentAttention`: a `LatentCache`, the compressed keys only;
- recurrent layers (linear / gated / delta-rule attention, mLSTM, Aaren): a
  `RecurrentCache`, a fixed-size state plus the rolling input window of the short
  convolution, so decoding memory does not grow with the sequence.

Shape legend: `B` batch, `T` new tokens, `D` model width, `L` cache slots, `H` heads,
`G` key/value heads, `K` key dim, `V` value dim, `R` latent (compressed KV) rank,
`P` rotary dims of a latent key, `C` convolved channels, `W` convolution kernel size.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..core.states import KVCache


class LatentCache(NamedTuple):
    """Cache of `MultiHeadLatentAttention`: per token one latent vector shared by every
    head, and one rotary key part shared by every head (DeepSeek-V2's compressed cache).

    latent:        `[B, L, R]` the normalised compressed keys/values `c_kv`.
    rope_key:      `[B, L, P]` the rotated decoupled key part (`P = 0` without rotary).
    positions:     `[B, L]` int64 absolute position of each slot (all slots are filled).
    next_position: `[B]` int64, the position the next token takes.
    """

    latent: torch.Tensor
    rope_key: torch.Tensor
    positions: torch.Tensor
    next_position: torch.Tensor


class RecurrentCache(NamedTuple):
    """Cache of a recurrent layer: a fixed size, whatever the number of tokens seen.

    state: the op's state after the last token: `LinearState(S [B, H, K, V])` for the
           gated delta family, `MLSTMState(C [B, H, K, V], n [B, H, K], m [B, H])` for
           mLSTM, `AarenState(m [B, H], u [B, H], w [B, H, V])` for Aaren.
    conv:  `[B, W - 1, C]` the last `W - 1` inputs of the short convolution (zeros
           before the sequence starts), or None for a layer without one.
    """

    state: Any
    conv: torch.Tensor | None


class MixerOutput(NamedTuple):
    """What every layer's `forward` returns.

    output: `[B, T, D]`.
    cache:  the layer's cache after the last token (`KVCache`, `LatentCache` or
            `RecurrentCache`), or None when no cache was given or asked for.
    """

    output: torch.Tensor
    cache: Any


__all__ = ["KVCache", "LatentCache", "MixerOutput", "RecurrentCache", "cache_nbytes"]


def cache_nbytes(cache) -> int:
    """Bytes of the tensors in a cache, or in a tuple of caches (a model's); None counts 0.

    Counts `numel · element_size` per tensor: exact for the caches the layers return,
    whose tensors are not views into larger buffers."""
    if cache is None:
        return 0
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size()
    if isinstance(cache, (tuple, list)):
        return sum(cache_nbytes(part) for part in cache)
    raise TypeError(f"cache: expected tensors in (named) tuples, got {type(cache).__name__}")
