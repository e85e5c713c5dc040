"""The shared body of the layers over `gated_delta_rule`: linear attention, GLA,
DeltaNet, Gated DeltaNet and Kimi Delta Attention differ only in a few hooks.

    q, k, v = W_q x, W_k x, W_v x                         [H, K], [H, K], [H, V]
    q, k, v = ShortConv(q, k, v)                          optional, cached for decoding
    q, k, v = features(q, k, v)                           e.g. SiLU, then L2 on q and k
    o       = gated_delta_rule(q, k, v, g=decay(x), beta=learning_rate(x))
    y       = W_o read_out(o, x)                          RMSNorm per head, output gate

Shape legend: `B` batch, `T` tokens, `D` model width, `H` heads, `K` key dim, `V` value
dim (`V = expand_v · K`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.gated_delta import gated_delta_rule
from ..core.shapes import check_positive_int
from .base import Mixer, resolve_head_dim
from .caches import MixerOutput, RecurrentCache
from .conv import DEFAULT_CONV_SIZE, ShortConv
from .norms import DEFAULT_EPS


class DeltaFamilyLayer(Mixer):
    """Base of the layers over `gated_delta_rule`; subclasses override the hooks
    `features`, `decay`, `learning_rate` and `read_out` (defaults: identity, None, None,
    identity).

    Args:
        d_model: D. n_heads: H. head_dim: K (default D / H).
        expand_v: V = expand_v · K.
        short_conv: a depthwise causal convolution on q, k and v.
        conv_size: its kernel size.
        chunk_size: tokens per chunk of the op's chunk form (default 64).
        norm_eps: epsilon of the layer's norms.

    The cache is `RecurrentCache(state=LinearState(S [B, H, K, V]), conv [B, W - 1,
    2·H·K + H·V] or None)`.
    """

    def __init__(self, d_model: int, n_heads: int, *, head_dim: int | None = None, expand_v: int = 1,
                 short_conv: bool = True, conv_size: int = DEFAULT_CONV_SIZE,
                 chunk_size: int | None = None, norm_eps: float = DEFAULT_EPS):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.head_dim = resolve_head_dim(d_model, n_heads, head_dim)
        check_positive_int("expand_v", expand_v, allow_none=False)
        check_positive_int("chunk_size", chunk_size)
        self.value_dim = expand_v * self.head_dim
        self.chunk_size, self.norm_eps = chunk_size, norm_eps
        H, K, V = n_heads, self.head_dim, self.value_dim
        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, H * V, bias=False)
        self.conv = ShortConv(2 * H * K + H * V, conv_size) if short_conv else None
        self.o_proj = nn.Linear(H * V, d_model, bias=False)

    # Hooks -------------------------------------------------------------------------------

    def features(self, q, k, v):
        """q, k `[B, T, H, K]`, v `[B, T, H, V]` after the convolution -> the op's inputs."""
        return q, k, v

    def decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """x `[B, T, D]` -> log-decay g `[B, T, H]` or `[B, T, H, K]`, or None (no decay)."""
        return None

    def learning_rate(self, x: torch.Tensor) -> torch.Tensor | None:
        """x `[B, T, D]` -> beta `[B, T, H]` (delta rule) or None (plain writes)."""
        return None

    def read_out(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o `[B, T, H, V]`, x `[B, T, D]` -> `[B, T, H, V]` before the output projection."""
        return o

    # -------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, cache: RecurrentCache | None = None, *, use_cache: bool = False,
                form: str = "auto") -> MixerOutput:
        """x: `[B, T, D]`, cache: `RecurrentCache` of the tokens before x, or None.

        Returns `MixerOutput(output [B, T, D], RecurrentCache or None)`.
        """
        self.check_input(x)
        self.check_cache(cache, RecurrentCache)
        H, K, V = self.n_heads, self.head_dim, self.value_dim
        qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
        conv_cache = None
        if self.conv is not None:
            qkv, conv_cache = self.conv(qkv, None if cache is None else cache.conv)
        q, k, v = qkv.split([H * K, H * K, H * V], dim=-1)
        q, k, v = self.features(q.unflatten(-1, (H, K)), k.unflatten(-1, (H, K)), v.unflatten(-1, (H, V)))
        keep = use_cache or cache is not None
        out = gated_delta_rule(
            q, k, v, g=self.decay(x), beta=self.learning_rate(x),
            initial_state=None if cache is None else cache.state, output_final_state=keep,
            chunk_size=self.chunk_size, form=form, impl="auto",
        )
        y = self.o_proj(self.read_out(out.output, x).flatten(-2))
        return self.result(y, RecurrentCache(out.final_state, conv_cache), keep)

