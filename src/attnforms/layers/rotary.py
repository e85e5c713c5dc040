"""Rotary position embedding (RoPE, Su et al. 2021), half-split pairing.

Channel `i` of the first half and channel `i + D/2` form a pair that is rotated by the
angle `p · base^(-2i/D)` at position `p`. A query rotated at position m and a key rotated
at n then have `q·k` depending on `m - n` only, so attention sees relative positions.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.shapes import compute_dtype

DEFAULT_BASE = 10000.0


class Rotary(nn.Module):
    """Rotate the last dimension of q or k by position.

    The angles are computed from the positions on every call, in float64, so any position
    is exact and the module holds no tables (nothing to save, nothing to move).

    Args:
        dim: rotated size, even.
        base: the frequency base; frequencies are `base^(-2i/dim)`, i = 0 .. dim/2 - 1.
    """

    def __init__(self, dim: int, base: float = DEFAULT_BASE):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0 or dim % 2:
            raise ValueError(f"dim: expected a positive even int (rotary pairs channels), got {dim!r}")
        if not base > 1:
            raise ValueError(f"base: expected a number > 1, got {base!r}")
        self.dim, self.base = dim, float(base)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: `[B, T, H, dim]`, positions: `[B, T]` int64 -> `[B, T, H, dim]` in x's dtype."""
        half = self.dim // 2
        inv_freq = self.base ** (-torch.arange(half, dtype=torch.float64, device=x.device) * 2 / self.dim)
        # [B, T, 1, dim/2]: one angle per pair, shared by every head.
        angles = (positions.to(torch.float64)[..., None] * inv_freq)[:, :, None, :]
        dtype = compute_dtype(x.dtype)
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        x1, x2 = x.to(dtype).split(half, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def positions_from(next_position: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Absolute positions `[B, T]` int64 of `length` new tokens that follow a cache whose
    next position is `next_position` `[B]` (0 without a cache)."""
    steps = torch.arange(length, dtype=torch.int64, device=device)
    if next_position is None:
        return steps.repeat(batch, 1)
    return next_position[:, None] + steps
