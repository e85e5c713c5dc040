"""Selective copying (Mamba, Gu & Dao 2023, arXiv 2312.00752, §4.1.1; the generator of
the S4 repository's copying task with scattered data tokens).

One example of length T with n data tokens (vocabulary V):

    0 0 x1 0 0 0 x2 x3 0 ... 0 xn 0 0 | M M M ... M
    region of T - n tokens: n data      n markers: the targets are x1 ... xn in order
    tokens at random positions, in
    order, blanks elsewhere

- Token 0 is the blank (noise), token V-1 the marker; data tokens are uniform over
  1..V-2. Data positions are a uniform subset of the region, kept in increasing order.
- The model is not fed its own answers: every answer position shows the marker, so the
  i-th marker must produce the i-th data token (it must count as well as select).
- Targets: x1 ... xn over the last n positions, IGNORE_INDEX elsewhere. Metric: accuracy
  over those n positions.

The Mamba setting is V 16, T 4096, n 16; the MAD baseline V 16, T 256, n 16 (the default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import check_batch_request, check_int, ignored_targets, random_subsets

BLANK = 0


@dataclass(frozen=True)
class SelectiveCopy:
    """Selective copying. vocab_size: V (>= 3: blank, marker, data); seq_len: T;
    num_tokens: n data tokens to copy (T >= 2n)."""

    name: ClassVar[str] = "selective_copy"
    metric: ClassVar[str] = "accuracy"

    vocab_size: int = 16
    seq_len: int = 256
    num_tokens: int = 16

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=3)
        check_int("num_tokens", self.num_tokens, minimum=1)
        check_int("seq_len", self.seq_len, minimum=2)
        if self.seq_len < 2 * self.num_tokens:
            raise ValueError(
                f"num_tokens: {self.num_tokens} tokens need seq_len >= {2 * self.num_tokens} "
                f"(a region holding them plus one marker each), got seq_len {self.seq_len}"
            )

    @property
    def marker(self) -> int:
        return self.vocab_size - 1

    @property
    def region_len(self) -> int:
        """Tokens before the answer markers: T - n."""
        return self.seq_len - self.num_tokens

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64, targets `[B, T]` int64 (the data tokens in order over the
        last n positions, else IGNORE_INDEX). `split` is accepted for the common interface."""
        check_batch_request(batch_size, generator, split)
        B, n = batch_size, self.num_tokens
        data = torch.randint(1, self.vocab_size - 1, (B, n), generator=generator)  # [B, n]
        positions = random_subsets(B, self.region_len, n, generator).sort(dim=1).values  # [B, n]

        region = torch.full((B, self.region_len), BLANK, dtype=torch.long)
        region.scatter_(1, positions, data)
        inputs = torch.cat([region, torch.full((B, n), self.marker, dtype=torch.long)], dim=1)
        targets = ignored_targets(B, self.seq_len)
        targets[:, self.region_len:] = data
        return inputs, targets
