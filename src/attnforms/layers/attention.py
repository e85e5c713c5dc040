"""`Attention`: multi-head softmax attention with every head layout and option the op has.

Head layouts, from the number of query heads `Hq`, key/value heads `G` and the model's
head count `H` (which fixes the head dim `D / H`):

| layout | heads                          | what it saves                               |
|--------|--------------------------------|---------------------------------------------|
| MHA    | `Hq = H`, `G = H`              | nothing: the baseline                       |
| GQA    | `Hq = H`, `1 < G < H`          | KV cache and K/V projections, by `H / G`    |
| MQA    | `Hq = H`, `G = 1`              | the same, by `H`                            |
| SQA    | `Hq < H`, `G <= Hq`            | attention FLOPs and Q/O projections, by `H / Hq` |

SQA (Sparse Query Attention, Filipek 2025) keeps the head dim `D / H` but computes only
`Hq` heads; the output projection maps `Hq · D/H` back to D. Its KV cache is set by G.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.states import KVCache
from ..ops.softmax import softmax_attention
from ..core.shapes import check_positive_int
from .base import Mixer, resolve_head_dim
from .caches import MixerOutput
from .norms import DEFAULT_EPS, RMSNorm
from .rotary import DEFAULT_BASE, Rotary, positions_from


class Attention(Mixer):
    """Causal multi-head softmax attention (MHA / GQA / MQA / SQA).

    Per token: `q = W_q x [Hq, K]`, `k = W_k x [G, K]`, `v = W_v x [G, K]`; with
    `qk_norm`, RMSNorm over K on q and k; with `rotary`, RoPE at the token's absolute
    position; then `softmax_attention` (query head h reads key/value head h // (Hq / G));
    with `output_gate`, the result is multiplied by `sigmoid(W_g x)` elementwise
    (gated attention); finally `W_o` maps `[Hq · K]` to D.

    Args:
        d_model: D, the input and output width.
        n_heads: H, the head count that fixes the head dim `K = D / H`.
        n_query_heads: Hq <= H (default H); fewer is SQA.
        n_kv_heads: G, dividing Hq (default Hq); fewer is GQA, 1 is MQA.
        head_dim: K, instead of D / H.
        rotary: apply RoPE to q and k (K must be even).
        rope_base: RoPE frequency base.
        qk_norm: RMSNorm on q and k per head before RoPE.
        output_gate: a sigmoid gate on the attention output.
        sinks: a learned logit per query head in the softmax denominator (init 0).
        window: None or W: each token sees its last W positions, itself included; the
            cache then keeps at most W - 1 tokens.
        score_mod, mask_mod: passed to `softmax_attention` (FlexAttention signatures,
            called with broadcasting tensors; positions are absolute).
        chunk_size: block size of the op's chunk form (default 64).
        norm_eps: epsilon of the QK-norm.

    The cache is the op's `KVCache(k [B, L, G, K], v [B, L, G, K], positions [B, L],
    next_position [B])`; keys are stored after RoPE.
    """

    def __init__(
        self, d_model: int, n_heads: int, *, n_query_heads: int | None = None,
        n_kv_heads: int | None = None, head_dim: int | None = None, rotary: bool = True,
        rope_base: float = DEFAULT_BASE, qk_norm: bool = False, output_gate: bool = False,
        sinks: bool = False, window: int | None = None, score_mod: Callable | None = None,
        mask_mod: Callable | None = None, chunk_size: int | None = None, norm_eps: float = DEFAULT_EPS,
    ):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.head_dim = resolve_head_dim(d_model, n_heads, head_dim)
        self.n_query_heads = n_heads if n_query_heads is None else n_query_heads
        check_positive_int("n_query_heads", self.n_query_heads, allow_none=False)
        if self.n_query_heads > n_heads:
            raise ValueError(
                f"n_query_heads: expected at most n_heads = {n_heads} (fewer query heads is SQA), "
                f"got {self.n_query_heads}"
            )
        self.n_kv_heads = self.n_query_heads if n_kv_heads is None else n_kv_heads
        check_positive_int("n_kv_heads", self.n_kv_heads, allow_none=False)
        if self.n_query_heads % self.n_kv_heads:
            raise ValueError(
                f"n_kv_heads: expected a divisor of the query heads {self.n_query_heads}, got {self.n_kv_heads}"
            )
        check_positive_int("window", window)
        check_positive_int("chunk_size", chunk_size)
        self.window, self.score_mod, self.mask_mod, self.chunk_size = window, score_mod, mask_mod, chunk_size

        Hq, G, K = self.n_query_heads, self.n_kv_heads, self.head_dim
        self.q_proj = nn.Linear(d_model, Hq * K, bias=False)
        self.k_proj = nn.Linear(d_model, G * K, bias=False)
        self.v_proj = nn.Linear(d_model, G * K, bias=False)
        self.o_proj = nn.Linear(Hq * K, d_model, bias=False)
        self.rotary = Rotary(K, rope_base) if rotary else None
        self.q_norm = RMSNorm(K, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(K, norm_eps) if qk_norm else None
        self.gate = nn.Linear(d_model, Hq * K, bias=False) if output_gate else None
        self.sinks = nn.Parameter(torch.zeros(Hq)) if sinks else None

    @property
    def layout(self) -> str:
        """"MHA", "GQA", "MQA" or "SQA" (see the module docstring)."""
        if self.n_query_heads < self.n_heads:
            return "SQA"
        if self.n_kv_heads == self.n_query_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, *, use_cache: bool = False,
                form: str = "auto") -> MixerOutput:
        """x: `[B, T, D]`, cache: `KVCache` of the tokens before x, or None.

        Returns `MixerOutput(output [B, T, D], KVCache or None)`.
        """
        self.check_input(x)
        self.check_cache(cache, KVCache)
        B, T, _ = x.shape
        q = self.q_proj(x).unflatten(-1, (self.n_query_heads, self.head_dim))
        k = self.k_proj(x).unflatten(-1, (self.n_kv_heads, self.head_dim))
        v = self.v_proj(x).unflatten(-1, (self.n_kv_heads, self.head_dim))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            positions = positions_from(None if cache is None else cache.next_position, B, T, x.device)
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        keep = use_cache or cache is not None
        out = softmax_attention(
            q, k, v, window=self.window, score_mod=self.score_mod, mask_mod=self.mask_mod,
            sinks=self.sinks, initial_state=cache, output_final_state=keep,
            chunk_size=self.chunk_size, form=form, impl="auto",
        )
        o = out.output.flatten(-2)  # [B, T, Hq · K]
        if self.gate is not None:
            o = o * torch.sigmoid(self.gate(x))
        return self.result(self.o_proj(o), out.final_state, keep)
