"""The five layers over `gated_delta_rule`, each with the parts its paper uses.

| layer                 | conv | features                  | decay g                      | beta       | read-out                          |
|-----------------------|------|---------------------------|------------------------------|------------|-----------------------------------|
| `LinearAttention`     | no   | `1 + elu` on q, k         | none                         | none       | RMSNorm                           |
| `GatedLinearAttention`| no   | none                      | GLA low-rank logsigmoid, per channel | none | RMSNorm ⊙ SiLU(W_g x)       |
| `DeltaNet`            | yes  | SiLU; L2 on q, k          | none                         | σ(W_β x)   | RMSNorm                           |
| `GatedDeltaNet`       | yes  | SiLU; L2 on q, k          | Mamba-style, per head        | σ(W_β x)   | RMSNorm ⊙ SiLU(W_g x)             |
| `KimiDeltaAttention`  | yes  | SiLU; L2 on q, k          | low-rank, per channel        | σ(W_β x)   | RMSNorm ⊙ σ(W_g↑ W_g↓ x)          |

RMSNorm is per head over V with one weight shared by the heads. `LinearAttention` has no
denominator (the op is unnormalised); the output RMSNorm takes its place, as in
TransNormer (Qin et al. 2022). Sources: GLA (Yang et al. 2024, arXiv 2312.06635),
DeltaNet (arXiv 2406.06484), Gated DeltaNet (arXiv 2412.06464), Kimi Linear
(arXiv 2510.26692); the parameterisations follow flash-linear-attention's layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gates import GLA_GATE_RANK, LogSigmoidDecay, LowRankDecay, MambaDecay, OutputGate
from .linear_base import DeltaFamilyLayer
from .norms import RMSNorm, l2_normalize


class LinearAttention(DeltaFamilyLayer):
    """Causal linear attention `o_t = Σ_{s<=t} (φ(q_t)·φ(k_s)) v_s` with `φ = 1 + elu`
    (Katharopoulos et al. 2020), normalised by an output RMSNorm instead of a denominator.
    Arguments as in `DeltaFamilyLayer` (short_conv defaults to False)."""

    def __init__(self, d_model: int, n_heads: int, *, short_conv: bool = False, **kwargs):
        super().__init__(d_model, n_heads, short_conv=short_conv, **kwargs)
        self.norm = RMSNorm(self.value_dim, self.norm_eps)

    def features(self, q, k, v):
        return F.elu(q) + 1, F.elu(k) + 1, v

    def read_out(self, o, x):
        return self.norm(o)


class _SiluL2Features:
    """q, k = L2Norm(SiLU(·)), v = SiLU(·): the DeltaNet / GDN / KDA feature maps."""

    def features(self, q, k, v):
        return l2_normalize(F.silu(q)), l2_normalize(F.silu(k)), F.silu(v)


class _SigmoidBeta:
    """beta = σ(W_β x) per head, in (0, 1)."""

    def _init_beta(self) -> None:
        self.beta_proj = nn.Linear(self.d_model, self.n_heads, bias=False)

    def learning_rate(self, x):
        return torch.sigmoid(self.beta_proj(x))


class GatedLinearAttention(DeltaFamilyLayer):
    """GLA: linear attention with a data-dependent decay per key channel,
    `g = logsigmoid(W↑ W↓ x + b) / 16` (rank `gate_rank`), and a swish output gate.
    Arguments as in `DeltaFamilyLayer` (short_conv defaults to False), plus gate_rank."""

    def __init__(self, d_model: int, n_heads: int, *, short_conv: bool = False,
                 gate_rank: int | None = None, **kwargs):
        super().__init__(d_model, n_heads, short_conv=short_conv, **kwargs)
        H, K, V = self.n_heads, self.head_dim, self.value_dim
        self.decay_gate = LogSigmoidDecay(d_model, H, K, rank=gate_rank or GLA_GATE_RANK)
        self.norm = RMSNorm(V, self.norm_eps)
        self.out_gate = OutputGate(d_model, H * V, "silu")

    def decay(self, x):
        return self.decay_gate(x)

    def read_out(self, o, x):
        return self.norm(o) * self.out_gate(x).unflatten(-1, o.shape[-2:])


class DeltaNet(_SiluL2Features, _SigmoidBeta, DeltaFamilyLayer):
    """DeltaNet: delta-rule writes with `beta = σ(W_β x)`, short convolution, SiLU and L2
    on q, k, output RMSNorm. Arguments as in `DeltaFamilyLayer`."""

    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self._init_beta()
        self.norm = RMSNorm(self.value_dim, self.norm_eps)

    def read_out(self, o, x):
        return self.norm(o)


class GatedDeltaNet(_SiluL2Features, _SigmoidBeta, DeltaFamilyLayer):
    """Gated DeltaNet: DeltaNet with a per-head decay
    `g = -exp(A_log) · softplus(W_a x + dt_bias)` and `RMSNorm(o) ⊙ SiLU(W_g x)`.
    Arguments as in `DeltaFamilyLayer`."""

    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self._init_beta()
        self.decay_gate = MambaDecay(d_model, self.n_heads)
        self.norm = RMSNorm(self.value_dim, self.norm_eps)
        self.out_gate = OutputGate(d_model, self.n_heads * self.value_dim, "silu")

    def decay(self, x):
        return self.decay_gate(x)

    def read_out(self, o, x):
        return self.norm(o) * self.out_gate(x).unflatten(-1, o.shape[-2:])


class KimiDeltaAttention(_SiluL2Features, _SigmoidBeta, DeltaFamilyLayer):
    """Kimi Delta Attention: the delta rule with a per-channel decay
    `g = -exp(A_log[h]) · softplus(W↑ W↓ x + dt_bias)` and a low-rank sigmoid output gate
    `RMSNorm(o) ⊙ σ(W_g↑ W_g↓ x)`; both ranks default to the head dim, as in Kimi
    Linear. Arguments as in `DeltaFamilyLayer`, plus gate_rank."""

    def __init__(self, d_model: int, n_heads: int, *, gate_rank: int | None = None, **kwargs):
        super().__init__(d_model, n_heads, **kwargs)
        self._init_beta()
        H, K, V = self.n_heads, self.head_dim, self.value_dim
        rank = gate_rank or K
        self.decay_gate = LowRankDecay(d_model, H, K, rank)
        self.norm = RMSNorm(V, self.norm_eps)
        self.out_gate = OutputGate(d_model, H * V, "sigmoid", rank=rank)

    def decay(self, x):
        return self.decay_gate(x)

    def read_out(self, o, x):
        return self.norm(o) * self.out_gate(x).unflatten(-1, o.shape[-2:])
