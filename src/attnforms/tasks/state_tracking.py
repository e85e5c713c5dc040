"""State tracking: the running sum of a token string modulo m; parity is m = 2 (Grazzi et
al., "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues", ICLR 2025,
arXiv 2411.12537; research/quality-anchors.md §1.7).

One example: tokens x_1 ... x_n uniform in 0..m-1, n between `min_length` and T, then
padding (token m) up to T. The target at position t < n is (x_1 + ... + x_t) mod m (for
parity, the running xor); padding is IGNORE_INDEX. With `per_position=False` only the
last real position is scored, which makes it a sequence classification of the whole
string. The vocabulary is m + 1 (the m symbols and the pad), which for parity is the
vocabulary of 3 the paper's configurations use. Training on short strings and testing on
longer ones (the paper: 3-40 for training, 40-256 for testing) is two instances with
different `min_length` / `seq_len`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import IGNORE_INDEX, check_batch_request, check_int, ignored_targets


@dataclass(frozen=True)
class ModularSum:
    """Running sum mod m. modulus: m (>= 2); seq_len: T; min_length: shortest string (None:
    every string fills T); per_position: score every real position, or only the last."""

    name: ClassVar[str] = "modular_sum"
    metric: ClassVar[str] = "accuracy"

    modulus: int = 2
    seq_len: int = 64
    min_length: int | None = None
    per_position: bool = True

    def __post_init__(self) -> None:
        check_int("modulus", self.modulus, minimum=2)
        check_int("seq_len", self.seq_len, minimum=1)
        if self.min_length is not None:
            check_int("min_length", self.min_length, minimum=1)
            if self.min_length > self.seq_len:
                raise ValueError(f"min_length: expected <= seq_len {self.seq_len}, got {self.min_length}")
        if not isinstance(self.per_position, bool):
            raise ValueError(f"per_position: expected a bool, got {self.per_position!r}")

    @property
    def vocab_size(self) -> int:
        """m symbols and the pad token m."""
        return self.modulus + 1

    @property
    def pad(self) -> int:
        return self.modulus

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64 (pad after each string), targets `[B, T]` int64 (running
        sums mod m at the scored positions, else IGNORE_INDEX). `split` is accepted for
        the common interface."""
        check_batch_request(batch_size, generator, split)
        B, T, m = batch_size, self.seq_len, self.modulus
        symbols = torch.randint(m, (B, T), generator=generator)
        if self.min_length is None:
            lengths = torch.full((B, 1), T, dtype=torch.long)
        else:
            lengths = torch.randint(self.min_length, T + 1, (B, 1), generator=generator)
        real = torch.arange(T) < lengths  # [B, T]
        inputs = torch.where(real, symbols, self.pad)
        running = torch.cumsum(symbols, dim=1) % m
        if self.per_position:
            targets = torch.where(real, running, IGNORE_INDEX)
        else:
            targets = ignored_targets(B, T)
            last = lengths - 1
            targets.scatter_(1, last, running.gather(1, last))
        return inputs, targets


def parity(seq_len: int = 64, min_length: int | None = None, per_position: bool = True) -> ModularSum:
    """Parity: the running xor of a bit string, `ModularSum` with modulus 2."""
    return ModularSum(modulus=2, seq_len=seq_len, min_length=min_length, per_position=per_position)
