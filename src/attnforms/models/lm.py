"""The two model types: a causal language model and a sequence model for non-text tasks.

Shape legend: `B` batch, `T` tokens, `D` model width, `V` vocabulary size (`vocab_size`),
`F` input features (`input_dim`), `O` outputs (`n_outputs`).

Both run in three ways, matching `Mixer`:

    out = model(inputs)                               # training
    out = model(prompt, use_cache=True)               # prefill; out.caches continues it
    out = model(more, out.caches)                     # chunked prefill
    out = model.step(next_input, out.caches)          # decoding, one token per row
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Stack
from .config import ModelConfig

EMBED_INIT_STD = 0.02


class ModelOutput(NamedTuple):
    """logits: `[B, T, V]` (LM), `[B, O]` (sequence model, pooled) or `[B, T, O]`
    (sequence model, `pool="none"`); from `step`, `[B, V]` or `[B, O]`.
    caches: one cache per block (`KVCache`, `LatentCache` or `RecurrentCache` by mixer),
    or None unless asked for or given."""

    logits: torch.Tensor
    caches: tuple[Any, ...] | None


def _check_token_ids(name: str, ids: torch.Tensor, ndim: int, vocab_size: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected an int64 (or int32) tensor of token ids, got {getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != ndim or ids.numel() == 0:
        expected = "[B, T] with T >= 1" if ndim == 2 else "[B]"
        raise ValueError(f"{name}: expected shape {expected}, got {list(ids.shape)}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{name}: expected token ids in [0, {vocab_size}), got values in [{low}, {high}]")


class CausalLM(nn.Module):
    """Embedding, the block stack, a final RMSNorm and an output head tied to the
    embedding (unless `config.tie_embeddings` is False)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.task != "lm":
            raise ValueError(f"config.task: CausalLM needs task='lm', got {config.task!r}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=EMBED_INIT_STD)
        self.stack = Stack(config)
        self.head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.embed.weight if self.head is None else self.head.weight)

    def forward(self, input_ids: torch.Tensor, caches=None, *, use_cache: bool = False,
                form: str = "auto") -> ModelOutput:
        """input_ids: `[B, T]` int64; caches: those returned for the tokens before, or None.

        Returns `ModelOutput(logits [B, T, V], caches or None)`.
        """
        _check_token_ids("input_ids", input_ids, 2, self.config.vocab_size)
        out = self.stack(self.embed(input_ids), caches, use_cache=use_cache, form=form)
        return ModelOutput(self._logits(out.hidden), out.caches)

    def step(self, token_ids: torch.Tensor, caches=None) -> ModelOutput:
        """One token per row in the recurrent form: token_ids `[B]` int64.

        Returns `ModelOutput(logits [B, V], caches including this token)`.
        """
        _check_token_ids("token_ids", token_ids, 1, self.config.vocab_size)
        out = self.stack(self.embed(token_ids[:, None]), caches, use_cache=True, form="recurrent")
        return ModelOutput(self._logits(out.hidden[:, 0]), out.caches)


class SequenceModel(nn.Module):
    """A block stack with a linear head for classification or regression of sequences.

    Inputs are token ids `[B, T]` (`config.input_dim` None, embedded) or continuous
    features `[B, T, F]` (projected to D). The head reads the hidden state of the last
    token (`pool="last"`), the mean over the tokens of the call (`"mean"`), or every token
    (`"none"`, per-step outputs). Logits for classification, values for regression: the
    loss decides.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.task != "sequence":
            raise ValueError(f"config.task: SequenceModel needs task='sequence', got {config.task!r}")
        self.config = config
        if config.input_dim is None:
            self.embed = nn.Embedding(config.vocab_size, config.d_model)
            nn.init.normal_(self.embed.weight, std=EMBED_INIT_STD)
        else:
            self.embed = nn.Linear(config.input_dim, config.d_model)
        self.stack = Stack(config)
        self.head = nn.Linear(config.d_model, config.n_outputs)

    def _embed(self, x: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
        if self.config.input_dim is None:
            _check_token_ids(name, x, ndim, self.config.vocab_size)
            return self.embed(x)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != ndim + 1 \
                or x.shape[-1] != self.config.input_dim:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            expected = "[B, T, F]" if ndim == 2 else "[B, F]"
            raise ValueError(f"{name}: expected float features {expected} with F = {self.config.input_dim}, got {shape}")
        return self.embed(x)

    def forward(self, x: torch.Tensor, caches=None, *, use_cache: bool = False, form: str = "auto") -> ModelOutput:
        """x: `[B, T]` token ids or `[B, T, F]` features; caches as in `CausalLM`.

        Returns `ModelOutput(outputs [B, O] (pool "last" / "mean") or [B, T, O] ("none"),
        caches or None)`.
        """
        out = self.stack(self._embed(x, "x", 2), caches, use_cache=use_cache, form=form)
        hidden = out.hidden
        if self.config.pool == "last":
            hidden = hidden[:, -1]
        elif self.config.pool == "mean":
            hidden = hidden.mean(dim=1)
        return ModelOutput(self.head(hidden), out.caches)

    def step(self, x: torch.Tensor, caches=None) -> ModelOutput:
        """One step: x `[B]` token ids or `[B, F]` features. Returns `ModelOutput(outputs
        [B, O] for this step (what pool "last" gives after it), caches)`."""
        out = self.stack(self._embed(x, "x", 1)[:, None], caches, use_cache=True, form="recurrent")
        return ModelOutput(self.head(out.hidden[:, 0]), out.caches)
