"""Needle in a haystack: passkey retrieval from filler tokens, a trained small-vocabulary
analogue of RULER's S-NIAH (research/quality-anchors.md §1.6, Tier 1 item T1-h).

One example of length T with a passkey of L digits:

    f f f f NEEDLE d1 d2 ... dL f f f f f ... f | QUERY d1 ... d(L-1)
    haystack with the needle inside               answer region (L tokens)

- Token ids: digits 0..9 are ids 0..9, then NEEDLE (10), QUERY (11), and the remaining
  ids 12..V-1 are filler.
- The needle (marker and L digits, uniform and independent) starts at position
  round(depth · H), halves rounded up, where H = T - 2L - 1 is the number of filler
  tokens: depth 0 puts it first, depth 1 right before the answer region. depth=None
  draws the start uniformly from 0..H per example.
- Haystack "random": uniform filler tokens. "repeated": the filler ids in increasing
  order, cycled from a random phase, so the haystack is one short passage repeated (the
  S-NIAH-1 flavour, where decay-free memories do well and decaying ones forget).
- Answer region: QUERY then the first L-1 digits (teacher forcing); the targets there are
  d1 ... dL, so position T-L predicts d1 from the query alone. Everything else is
  IGNORE_INDEX. Metric: per-digit accuracy in the answer region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import check_batch_request, check_int, ignored_targets

NUM_DIGITS = 10
NEEDLE = NUM_DIGITS
QUERY = NUM_DIGITS + 1
FIRST_FILLER = NUM_DIGITS + 2
HAYSTACKS = ("random", "repeated")


@dataclass(frozen=True)
class Needle:
    """Passkey retrieval. vocab_size: V (>= 13: ten digits, two markers, filler);
    seq_len: T; passkey_length: L digits; depth: needle depth in [0, 1], or None for a
    uniform depth per example; haystack: "random" or "repeated"."""

    name: ClassVar[str] = "needle"
    metric: ClassVar[str] = "accuracy"

    vocab_size: int = 32
    seq_len: int = 256
    passkey_length: int = 5
    depth: float | None = None
    haystack: str = "random"

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=FIRST_FILLER + 1)
        check_int("passkey_length", self.passkey_length, minimum=1)
        check_int("seq_len", self.seq_len, minimum=1)
        minimum_len = 2 * self.passkey_length + 1
        if self.seq_len < minimum_len:
            raise ValueError(
                f"seq_len: a passkey of {self.passkey_length} digits needs seq_len >= {minimum_len} "
                f"(needle plus answer region), got {self.seq_len}"
            )
        if self.depth is not None and (
            isinstance(self.depth, bool) or not isinstance(self.depth, (int, float)) or not 0 <= self.depth <= 1
        ):
            raise ValueError(f"depth: expected a float in [0, 1] or None, got {self.depth!r}")
        if self.haystack not in HAYSTACKS:
            raise ValueError(f"haystack: expected one of {HAYSTACKS}, got {self.haystack!r}")

    @property
    def haystack_len(self) -> int:
        """H: filler tokens per example, T - 2L - 1."""
        return self.seq_len - 2 * self.passkey_length - 1

    @property
    def num_filler(self) -> int:
        return self.vocab_size - FIRST_FILLER

    def needle_start(self, depth: float) -> int:
        """Position of the NEEDLE marker for a depth in [0, 1]: round(depth · H), halves up."""
        return math.floor(depth * self.haystack_len + 0.5)

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64, targets `[B, T]` int64 (the passkey digits over the last
        L positions, else IGNORE_INDEX). `split` is accepted for the common interface."""
        check_batch_request(batch_size, generator, split)
        B, T, L, H = batch_size, self.seq_len, self.passkey_length, self.haystack_len
        passkey = torch.randint(NUM_DIGITS, (B, L), generator=generator)  # [B, L]
        if self.depth is None:
            starts = torch.randint(H + 1, (B, 1), generator=generator)
        else:
            starts = torch.full((B, 1), self.needle_start(self.depth), dtype=torch.long)

        if self.haystack == "random":
            filler = torch.randint(self.num_filler, (B, H), generator=generator)
        else:
            phase = torch.randint(self.num_filler, (B, 1), generator=generator)
            filler = (phase + torch.arange(H)) % self.num_filler
        filler = filler + FIRST_FILLER  # [B, H]

        # Write the needle at its start, then pour the filler into the holes: a boolean
        # assignment fills row-major, and every row has exactly H holes, so row b's
        # filler lands in row b's holes in order.
        needle = torch.cat([torch.full((B, 1), NEEDLE), passkey], dim=1)  # [B, L + 1]
        haystack = torch.full((B, H + L + 1), -1, dtype=torch.long)
        haystack.scatter_(1, starts + torch.arange(L + 1), needle)
        haystack[haystack < 0] = filler.reshape(-1)

        answer_inputs = torch.cat([torch.full((B, 1), QUERY), passkey[:, :-1]], dim=1)  # [B, L]
        inputs = torch.cat([haystack, answer_inputs], dim=1)
        targets = ignored_targets(B, T)
        targets[:, T - L:] = passkey
        return inputs, targets
