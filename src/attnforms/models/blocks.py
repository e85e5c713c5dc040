"""The pieces of a model around the mixers: SwiGLU MLP, pre-norm block, the stack.

Shape legend: `B` batch, `T` tokens, `D` model width.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import RMSNorm
from ..layers.conv import ShortConv
from .config import ModelConfig
from .mixers import build_mixer


class SwiGLU(nn.Module):
    """`W_down (SiLU(W_gate x) ⊙ W_up x)`: `[..., D] -> [..., D]` through `hidden`."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class BlockCache(NamedTuple):
    """Cache of a block with `block_conv`: the mixer's own cache and the convolution's
    last `W - 1` inputs `[B, W - 1, D]`. Blocks without `block_conv` return the mixer's
    cache alone."""

    mixer: Any
    conv: torch.Tensor


class Block(nn.Module):
    """Pre-norm residual block: `h = x + mixer(norm(x))`, `y = h + mlp(norm(h))`; with
    `config.block_conv`, `h = x + mixer(conv(norm(x)))`."""

    def __init__(self, config: ModelConfig, mixer_name: str):
        super().__init__()
        self.mixer_name = mixer_name
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = build_mixer(mixer_name, config)
        self.conv = ShortConv(config.d_model, config.conv_size) if config.block_conv else None
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.resolved_mlp_hidden)

    def forward(self, x: torch.Tensor, cache=None, *, use_cache: bool = False, form: str = "auto"):
        """x: `[B, T, D]` -> `(y [B, T, D], the mixer's cache or None)`."""
        u = self.mixer_norm(x)
        if self.conv is None:
            mixed = self.mixer(u, cache, use_cache=use_cache, form=form)
            new_cache = mixed.cache
        else:
            if cache is not None and not isinstance(cache, BlockCache):
                raise ValueError(f"cache: a block with block_conv expects a BlockCache, got {type(cache).__name__}")
            u, conv_cache = self.conv(u, None if cache is None else cache.conv)
            mixed = self.mixer(u, None if cache is None else cache.mixer, use_cache=use_cache, form=form)
            new_cache = BlockCache(mixed.cache, conv_cache) if mixed.cache is not None else None
        h = x + mixed.output
        return h + self.mlp(self.mlp_norm(h)), new_cache


class StackOutput(NamedTuple):
    """hidden: `[B, T, D]` after the final norm; caches: one per block, or None."""

    hidden: torch.Tensor
    caches: tuple[Any, ...] | None


class Stack(nn.Module):
    """The blocks of `config.mixers` and a final RMSNorm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config, name) for name in config.mixers)
        self.norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, x: torch.Tensor, caches=None, *, use_cache: bool = False, form: str = "auto") -> StackOutput:
        """x: `[B, T, D]`; caches: None or one cache per block (as returned before).

        With `use_cache` or given caches, returns the caches after x (a tuple, one per
        block): `KVCache`, `LatentCache` or `RecurrentCache` by mixer.
        """
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(
                f"caches: expected one cache per block ({len(self.blocks)}), got {len(caches)}"
            )
        keep = use_cache or caches is not None
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[i], use_cache=keep, form=form)
            new_caches.append(cache)
        return StackOutput(self.norm(x), tuple(new_caches) if keep else None)
