"""The short causal convolution of the linear-attention layers (DeltaNet, GDN, KDA, ...).

A depthwise convolution over time with a small kernel (4 in the papers) lets each of
q, k, v mix in the few tokens just before it, a cheap local inductive bias the recurrent
state alone lacks. For decoding it keeps its own cache: the last `W - 1` inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CONV_SIZE = 4


class ShortConv(nn.Module):
    """Depthwise causal convolution: `y_t[c] = Σ_{j<W} w[c, j] · x_{t-W+1+j}[c]`, with
    inputs before the sequence taken from the cache (zeros at the start). No bias, no
    activation (the layer applies its own).

    Args:
        channels: C, convolved independently.
        kernel_size: W >= 2 (the current token and W - 1 before it).
    """

    def __init__(self, channels: int, kernel_size: int = DEFAULT_CONV_SIZE):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 2:
            raise ValueError(f"conv_size: expected an int >= 2, got {kernel_size!r}")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        # The default of a depthwise nn.Conv1d: uniform in ±1/sqrt(fan_in), fan_in = W.
        bound = 1 / math.sqrt(kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def empty_cache(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The cache before any token: zeros `[B, W - 1, C]` in `like`'s dtype and device."""
        return like.new_zeros(batch, self.kernel_size - 1, self.channels)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: `[B, T, C]`, cache: `[B, W - 1, C]` or None.

        Returns `(y [B, T, C], cache [B, W - 1, C])`, the cache holding the last W - 1
        inputs (earlier cached ones when T < W - 1).
        """
        B, T, C = x.shape
        if cache is None:
            cache = self.empty_cache(B, x)
        elif cache.shape != (B, self.kernel_size - 1, C):
            raise ValueError(
                f"cache.conv: expected shape [B, W - 1, C] = {[B, self.kernel_size - 1, C]}, "
                f"got {list(cache.shape)}"
            )
        full = torch.cat([cache.to(x.dtype), x], dim=1)  # [B, W - 1 + T, C]
        y = F.conv1d(full.transpose(1, 2), self.weight.to(x.dtype), groups=C).transpose(1, 2)
        # A copy, not a view: a view would keep the whole [B, W - 1 + T, C] input alive
        # in the cache after a long prefill.
        return y, full[:, T:].clone()
