"""What every layer shares: the call signature, the one-token step, argument checks.

Every layer maps `x [B, T, D]` to `[B, T, D]` and can carry a cache between calls:

    out = layer(x)                                   # training: no cache kept
    out = layer(prompt, use_cache=True)              # prefill: out.cache continues it
    out = layer(more, out.cache)                     # chunked prefill: same as one call
    y_t, cache = layer.step(x_t, cache)              # decoding, x_t [B, D]

A call on a cache gives the same outputs as one call on the whole sequence (up to
rounding), whatever the forms used on either side.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.shapes import check_positive_int
from .caches import MixerOutput


class Mixer(nn.Module):
    """Base class of the sequence mixers (attention and its recurrent relatives).

    Subclasses set `self.d_model` and implement
    `forward(x [B, T, D], cache=None, *, use_cache=False, form="auto") -> MixerOutput`:
    `cache` is the cache of the tokens before `x` (None: nothing before), `use_cache`
    asks for the cache after `x` when none was given (with one it is always returned),
    `form` is passed to the op ("parallel" | "chunk" | "recurrent" | "auto").
    """

    d_model: int

    def step(self, x: torch.Tensor, cache=None) -> tuple[torch.Tensor, object]:
        """One token in the recurrent form.

        Args:
            x: `[B, D]` the new token's input.
            cache: the layer's cache of the tokens before it, or None at the start.

        Returns:
            `(y [B, D], cache)` the output and the cache including this token.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected one token per row, shape [B, D], got {shape}")
        out = self(x[:, None], cache, use_cache=True, form="recurrent")
        return out.output[:, 0], out.cache

    def check_input(self, x: torch.Tensor) -> None:
        """Raise unless `x` is a float tensor `[B, T, D]` with T >= 1 and this layer's D."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x: expected a floating torch.Tensor [B, T, D], got {type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] == 0:
            raise ValueError(
                f"x: expected shape [B, T, D] with T >= 1 and D = d_model = {self.d_model}, "
                f"got {list(x.shape)}"
            )

    @staticmethod
    def check_cache(cache, cache_type: type) -> None:
        """Raise unless `cache` is None or a `cache_type` (the layer's own kind)."""
        if cache is not None and not isinstance(cache, cache_type):
            raise TypeError(
                f"cache: expected None or a {cache_type.__name__} "
                f"(fields {', '.join(cache_type._fields)}), got {type(cache).__name__}"
            )

    @staticmethod
    def result(output: torch.Tensor, cache, keep: bool) -> MixerOutput:
        return MixerOutput(output, cache if keep else None)


def resolve_head_dim(d_model: int, n_heads: int, head_dim: int | None) -> int:
    """`head_dim`, or `d_model // n_heads` when None (then n_heads must divide d_model)."""
    check_positive_int("d_model", d_model, allow_none=False)
    check_positive_int("n_heads", n_heads, allow_none=False)
    check_positive_int("head_dim", head_dim)
    if head_dim is not None:
        return head_dim
    if d_model % n_heads:
        raise ValueError(
            f"n_heads: expected a divisor of d_model = {d_model} (or give head_dim), got {n_heads}"
        )
    return d_model // n_heads
