"""Normalisations the layers use: RMSNorm and the L2 normalisation of q and k.

Both compute in float32 at least (float64 for float64 inputs) and return the input dtype,
so a bf16 model normalises as accurately as a float32 one.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.shapes import compute_dtype

DEFAULT_EPS = 1e-6


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x²) + eps) * weight` over the last dimension.

    Used on the residual stream (`dim = D`), per head on attention outputs and on q / k
    (`dim = K` or `V`, one weight shared by every head), and on MLA's latent (`dim = R`).

    Args:
        dim: size of the last dimension.
        eps: added to the mean square.
    """

    def __init__(self, dim: int, eps: float = DEFAULT_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `[..., dim]` -> `[..., dim]` in x's dtype."""
        y = x.to(compute_dtype(x.dtype))
        y = y * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


def l2_normalize(x: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """`x / sqrt(Σ x² + eps)` over the last dimension: `[..., K]` -> `[..., K]`.

    The delta rule needs unit keys: then `I - β k kᵀ` has eigenvalues 1 and `1 - β`, a
    contraction for β in (0, 1], and the state cannot blow up.
    """
    y = x.to(compute_dtype(x.dtype))
    return (y * torch.rsqrt(y.square().sum(dim=-1, keepdim=True) + eps)).to(x.dtype)
