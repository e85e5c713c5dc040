"""`MultiHeadLatentAttention` (MLA, DeepSeek-V2, arXiv 2405.04434): softmax attention
whose keys and values are decompressed from one low-rank latent per token, so the cache
holds only that latent and a small rotary key shared by every head.

Per token, with latent rank R, per-head no-rotary dim N, rotary dim P and value dim V:

    c   = RMSNorm(W_dkv x)[:R]                 latent, cached          [R]
    k_r = RoPE(W_dkv x)[R:]                    decoupled rotary key, cached, shared by heads [P]
    k_h = [W_uk,h c , k_r]                     per-head key             [N + P]
    v_h = W_uv,h c                             per-head value           [V]
    q_h = [W_uq,h c_q , RoPE(W_qr,h c_q)]       c_q = RMSNorm(W_dq x) (or x without q_rank)

and attention is scaled by `(N + P)^-1/2`. `P = 0` is MLA without positions (NoPE), as
in Kimi Linear's MLA layers, where the KDA layers supply position information.

Two exact ways to compute it:

- expanded (training, prefill): decompress k and v per head, then ordinary multi-head
  attention; the cheaper one when many queries share the decompression;
- absorbed (decoding): fold `W_uk,h` into the query, `q·k_h = (W_uk,hᵀ q_nope)·c + q_r·k_r`,
  and attend with one shared key `[c, k_r]` and value `c` (MQA over the latent), then
  apply `W_uv,h` to the result. Decoding then reads the compressed cache as it is.

The layer takes the absorbed path when the op would run its recurrent form (one token
with `form="auto"`, or `form="recurrent"`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.dispatch import resolve_form
from ..core.states import KVCache
from ..ops.softmax import FAMILY as SOFTMAX
from ..ops.softmax import softmax_attention
from ..core.shapes import check_positive_int
from .base import Mixer, resolve_head_dim
from .caches import LatentCache, MixerOutput
from .norms import DEFAULT_EPS, RMSNorm
from .rotary import DEFAULT_BASE, Rotary, positions_from


class MultiHeadLatentAttention(Mixer):
    """Causal MLA with a compressed latent cache.

    Args:
        d_model: D. n_heads: H.
        kv_rank: R, the latent width (DeepSeek-V2: 512 = 4 × head dim).
        q_rank: None (queries projected from x) or the width of a compressed query.
        head_dim: N, the no-rotary query/key dim per head (default D / H).
        rope_dim: P, the decoupled rotary dim (even; 0 for no positions; default N / 2).
        v_dim: V, the value dim per head (default N).
        rope_base: RoPE frequency base.
        chunk_size: block size of the op's chunk form.
        norm_eps: epsilon of the latent RMSNorms.

    The cache is a `LatentCache(latent [B, L, R], rope_key [B, L, P], positions [B, L],
    next_position [B])`: `R + P` numbers per token, against `2 · H · N` for MHA.
    """

    def __init__(
        self, d_model: int, n_heads: int, *, kv_rank: int, q_rank: int | None = None,
        head_dim: int | None = None, rope_dim: int | None = None, v_dim: int | None = None,
        rope_base: float = DEFAULT_BASE, chunk_size: int | None = None, norm_eps: float = DEFAULT_EPS,
    ):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.nope_dim = resolve_head_dim(d_model, n_heads, head_dim)
        self.rope_dim = self.nope_dim // 2 if rope_dim is None else rope_dim
        if not isinstance(self.rope_dim, int) or self.rope_dim < 0 or self.rope_dim % 2:
            raise ValueError(f"rope_dim: expected an even int >= 0, got {self.rope_dim!r}")
        self.v_dim = self.nope_dim if v_dim is None else v_dim
        check_positive_int("v_dim", self.v_dim, allow_none=False)
        check_positive_int("kv_rank", kv_rank, allow_none=False)
        check_positive_int("q_rank", q_rank)
        check_positive_int("chunk_size", chunk_size)
        self.kv_rank, self.chunk_size = kv_rank, chunk_size

        H, N, P, V, R = n_heads, self.nope_dim, self.rope_dim, self.v_dim, kv_rank
        if q_rank is None:
            self.q_down, self.q_norm = None, None
            self.q_up = nn.Linear(d_model, H * (N + P), bias=False)
        else:
            self.q_down = nn.Linear(d_model, q_rank, bias=False)
            self.q_norm = RMSNorm(q_rank, norm_eps)
            self.q_up = nn.Linear(q_rank, H * (N + P), bias=False)
        self.kv_down = nn.Linear(d_model, R + P, bias=False)
        self.kv_norm = RMSNorm(R, norm_eps)
        # Rows per head: N key rows then V value rows (the absorbed path views it so).
        self.kv_up = nn.Linear(R, H * (N + V), bias=False)
        self.o_proj = nn.Linear(H * V, d_model, bias=False)
        self.rotary = Rotary(P, rope_base) if P else None

    def forward(self, x: torch.Tensor, cache: LatentCache | None = None, *, use_cache: bool = False,
                form: str = "auto") -> MixerOutput:
        """x: `[B, T, D]`, cache: `LatentCache` of the tokens before x, or None.

        Returns `MixerOutput(output [B, T, D], LatentCache or None)`.
        """
        self.check_input(x)
        self.check_cache(cache, LatentCache)
        B, T, _ = x.shape
        positions = positions_from(None if cache is None else cache.next_position, B, T, x.device)
        q_nope, q_rope = self._queries(x, positions)
        latent, rope_key = self._compress(x, positions)
        new = LatentCache(latent, rope_key, positions, positions[:, -1] + 1)
        if cache is not None:
            new = LatentCache(
                *(torch.cat(pair, dim=1) for pair in zip(cache[:3], new[:3])), new.next_position
            )
        if resolve_form(SOFTMAX, form, T) == "recurrent":
            o = self._absorbed(q_nope, q_rope, new, form)
        else:
            o = self._expanded(q_nope, q_rope, new, T, form)
        keep = use_cache or cache is not None
        return self.result(self.o_proj(o.flatten(-2)), new, keep)

    def _queries(self, x, positions):
        """-> q_nope `[B, T, H, N]`, q_rope `[B, T, H, P]` (rotated)."""
        c_q = x if self.q_down is None else self.q_norm(self.q_down(x))
        q = self.q_up(c_q).unflatten(-1, (self.n_heads, self.nope_dim + self.rope_dim))
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        if self.rotary is not None:
            q_rope = self.rotary(q_rope, positions)
        return q_nope, q_rope

    def _compress(self, x, positions):
        """-> latent `[B, T, R]` (normalised), rope_key `[B, T, P]` (rotated)."""
        latent, rope_key = self.kv_down(x).split([self.kv_rank, self.rope_dim], dim=-1)
        if self.rotary is not None:
            rope_key = self.rotary(rope_key[:, :, None], positions)[:, :, 0]
        return self.kv_norm(latent), rope_key

    def _scale(self) -> float:
        # The score is q·k over the N + P dims of the original head, in both paths.
        return (self.nope_dim + self.rope_dim) ** -0.5

    def _expanded(self, q_nope, q_rope, keys: LatentCache, T: int, form: str) -> torch.Tensor:
        """Decompress every cached and new latent, then multi-head attention.
        keys: the cache including the T new tokens. Returns `[B, T, H, V]`."""
        H, N = self.n_heads, self.nope_dim
        kv = self.kv_up(keys.latent).unflatten(-1, (H, N + self.v_dim))  # [B, L, H, N + V]
        k_nope, v = kv.split([N, self.v_dim], dim=-1)
        k = torch.cat([k_nope, keys.rope_key[:, :, None].expand(-1, -1, H, -1)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        L = keys.latent.shape[1]
        before = None
        if L > T:
            before = KVCache(k[:, :L - T], v[:, :L - T], keys.positions[:, :L - T], keys.positions[:, L - T])
        return softmax_attention(
            q, k[:, L - T:], v[:, L - T:], scale=self._scale(), initial_state=before,
            chunk_size=self.chunk_size, form=form, impl="auto",
        ).output

    def _absorbed(self, q_nope, q_rope, keys: LatentCache, form: str) -> torch.Tensor:
        """Attention in latent space: one shared key `[c, k_r]` `[R + P]` and value c
        `[R]`; W_uk folds into the queries, W_uv applies after. Returns `[B, T, H, V]`."""
        H, N, T = self.n_heads, self.nope_dim, q_nope.shape[1]
        w = self.kv_up.weight.view(H, N + self.v_dim, self.kv_rank)
        w_uk, w_uv = w[:, :N], w[:, N:]  # [H, N, R], [H, V, R]
        q = torch.cat([torch.einsum("bthn,hnr->bthr", q_nope, w_uk), q_rope], dim=-1)
        k = torch.cat([keys.latent, keys.rope_key], dim=-1)[:, :, None]  # [B, L, 1, R + P]
        v = keys.latent[:, :, None]  # [B, L, 1, R]
        L = k.shape[1]
        before = None
        if L > T:
            before = KVCache(k[:, :L - T], v[:, :L - T], keys.positions[:, :L - T], keys.positions[:, L - T])
        o = softmax_attention(
            q, k[:, L - T:], v[:, L - T:], scale=self._scale(), initial_state=before,
            chunk_size=self.chunk_size, form=form, impl="auto",
        ).output  # [B, T, H, R]
        return torch.einsum("bthr,hvr->bthv", o, w_uv)
