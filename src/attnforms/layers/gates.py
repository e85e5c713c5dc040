"""Gate parameterisations: the log-decays `g <= 0` of the gated layers, and output gates.

| module            | used by | g                                                      |
|-------------------|---------|--------------------------------------------------------|
| `MambaDecay`      | GDN     | `-exp(A_log[h]) · softplus(W x + dt_bias[h])`, `[B, T, H]` |
| `LowRankDecay`    | KDA     | `-exp(A_log[h]) · softplus(W↑ W↓ x + dt_bias[h, c])`, `[B, T, H, K]` |
| `LogSigmoidDecay` | GLA     | `logsigmoid(W↑ W↓ x + b) / normalizer`, `[B, T, H, K]`  |

All three are <= 0 by construction, as the ops require.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Mamba-2 / GDN / KDA initialisation (flash-linear-attention's defaults): decay rates
# A ~ U(1, 16) per head and time steps dt log-uniform in [1e-3, 0.1] (floor 1e-4), stored
# as dt_bias = softplus⁻¹(dt), so that softplus(dt_bias) = dt at init.
A_INIT_RANGE = (1.0, 16.0)
DT_INIT_RANGE = (1e-3, 0.1)
DT_INIT_FLOOR = 1e-4

# GLA: rank of the gate projection and the divisor that keeps decays near 1 at init
# (Yang et al. 2024, gate_low_rank_dim = 16, gate_logit_normalizer = 16).
GLA_GATE_RANK = 16
GLA_GATE_NORMALIZER = 16.0
# None: the gate's bias keeps nn.Linear's default (within ±1/sqrt(rank), so every channel
# starts at a decay of about 0.95-0.97 per token). (low, high): per-token decay rates
# -log(decay) drawn log-uniformly in [low, high] at initialisation, one per channel, as
# Mamba / GDN / KDA draw their time steps, so that some channels start with long memory.
GLA_DECAY_RATE_INIT: tuple[float, float] | None = None


def _init_decay_rates(A_log: torch.Tensor, dt_bias: torch.Tensor) -> None:
    """Fill `A_log` with log U(1, 16) and `dt_bias` with softplus⁻¹ of a log-uniform dt."""
    with torch.no_grad():
        A_log.copy_(torch.empty_like(A_log).uniform_(*A_INIT_RANGE).log())
        low, high = (math.log(x) for x in DT_INIT_RANGE)
        dt = torch.exp(torch.empty_like(dt_bias).uniform_(low, high)).clamp(min=DT_INIT_FLOOR)
        # softplus⁻¹(dt) = dt + log(1 - exp(-dt)), written with expm1 for small dt.
        dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def _low_rank(d_model: int, rank: int, width: int, bias: bool) -> nn.Sequential:
    """`x -> W↑ (W↓ x)`, `d_model -> rank -> width`: few parameters for a wide gate."""
    return nn.Sequential(nn.Linear(d_model, rank, bias=False), nn.Linear(rank, width, bias=bias))


class MambaDecay(nn.Module):
    """Gated DeltaNet's decay, one per head (Mamba-2 style).

    `g = -exp(A_log[h]) · softplus(W x + dt_bias[h])`.

    Args:
        d_model: D. n_heads: H.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        _init_decay_rates(self.A_log, self.dt_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `[B, T, D]` -> g `[B, T, H]`, <= 0."""
        return -self.A_log.exp() * F.softplus(self.proj(x) + self.dt_bias)


class LowRankDecay(nn.Module):
    """Kimi Delta Attention's decay, one per head and key channel, through a low-rank
    projection (rank = head dim in Kimi Linear).

    `g[h, c] = -exp(A_log[h]) · softplus((W↑ W↓ x)[h, c] + dt_bias[h, c])`.

    Args:
        d_model: D. n_heads: H. head_dim: K. rank: inner width of the projection.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, rank: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.proj = _low_rank(d_model, rank, n_heads * head_dim, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.dt_bias = nn.Parameter(torch.empty(n_heads * head_dim))
        _init_decay_rates(self.A_log, self.dt_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `[B, T, D]` -> g `[B, T, H, K]`, <= 0."""
        rate = F.softplus(self.proj(x) + self.dt_bias).unflatten(-1, (self.n_heads, self.head_dim))
        return -self.A_log.exp()[:, None] * rate


class LogSigmoidDecay(nn.Module):
    """GLA's decay, one per head and key channel, through a low-rank projection.

    `g = logsigmoid(W↑ W↓ x + b) / normalizer`: the normalizer keeps decays close to 1
    (long memory) at initialisation.

    Args:
        d_model: D. n_heads: H. head_dim: K. rank: inner width (16 in GLA).
        normalizer: divides the log-sigmoid (16 in GLA).
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, rank: int = GLA_GATE_RANK,
                 normalizer: float = GLA_GATE_NORMALIZER):
        super().__init__()
        self.n_heads, self.head_dim, self.normalizer = n_heads, head_dim, normalizer
        self.proj = _low_rank(d_model, rank, n_heads * head_dim, bias=True)
        if GLA_DECAY_RATE_INIT is not None:
            self._spread_decays(*GLA_DECAY_RATE_INIT)

    def _spread_decays(self, low: float, high: float) -> None:
        """Set the bias so that at zero input each channel decays at a rate -log(decay)
        drawn log-uniformly in [low, high]: logsigmoid(b) / n = -rate, so
        b = logit(exp(-n · rate)) = -n · rate - log(1 - exp(-n · rate))."""
        bias = self.proj[1].bias
        with torch.no_grad():
            rate = torch.exp(torch.empty_like(bias).uniform_(math.log(low), math.log(high)))
            scaled = self.normalizer * rate
            bias.copy_(-scaled - torch.log(-torch.expm1(-scaled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `[B, T, D]` -> g `[B, T, H, K]`, <= 0."""
        g = F.logsigmoid(self.proj(x)) / self.normalizer
        return g.unflatten(-1, (self.n_heads, self.head_dim))


class OutputGate(nn.Module):
    """A gate on a layer's output before the output projection: `act(W x)`, with W full
    or low-rank (`W↑ W↓`, Kimi Linear's output gate).

    Args:
        d_model: D. width: the gated width (heads × value dim).
        activation: "sigmoid" (KDA, gated attention) or "silu" (GLA, GDN: a swish gate).
        rank: None for a full projection, else the inner width of a low-rank one.
    """

    ACTIVATIONS = {"sigmoid": torch.sigmoid, "silu": F.silu}

    def __init__(self, d_model: int, width: int, activation: str = "sigmoid", rank: int | None = None):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(self.ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.proj = nn.Linear(d_model, width, bias=False) if rank is None else _low_rank(d_model, rank, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: `[B, T, D]` -> `[B, T, width]` in (0, 1) (sigmoid) or the swish of it."""
        return self.ACTIVATIONS[self.activation](self.proj(x))
