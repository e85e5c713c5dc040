"""Induction heads (Mamba, Gu & Dao 2023, arXiv 2312.00752, §4.1.2; the H3 / safari
formulation).

One example of length T (vocabulary V, special token V-1):

    a c b S x d a ... c b S
          p p+1            T-1: the target is x, the token that followed S at p

- Ordinary tokens are uniform over 0..V-2. The special token S is written once at a
  uniform position p in 0..T-3 (never among the last two positions, so p+1 holds an
  ordinary token) and again at the last position.
- Only the last position is scored; its target is the token at p+1. Chance is 1/(V-1).
The Mamba setting is V 16, T 256 for training, longer for testing length generalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import check_batch_request, check_int, ignored_targets


@dataclass(frozen=True)
class InductionHeads:
    """Induction heads. vocab_size: V (>= 3: special token and two ordinary ones);
    seq_len: T (>= 3)."""

    name: ClassVar[str] = "induction"
    metric: ClassVar[str] = "accuracy"

    vocab_size: int = 16
    seq_len: int = 256

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=3)
        check_int("seq_len", self.seq_len, minimum=3)

    @property
    def special(self) -> int:
        return self.vocab_size - 1

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64, targets `[B, T]` int64 (the answer at position T-1, else
        IGNORE_INDEX). `split` is accepted for the common interface."""
        check_batch_request(batch_size, generator, split)
        B, T = batch_size, self.seq_len
        inputs = torch.randint(self.vocab_size - 1, (B, T), generator=generator)
        first = torch.randint(T - 2, (B, 1), generator=generator)  # p in 0 .. T-3
        inputs.scatter_(1, first, self.special)
        inputs[:, -1] = self.special
        targets = ignored_targets(B, T)
        targets[:, -1] = inputs.gather(1, first + 1).squeeze(1)
        return inputs, targets
