"""Multi-query associative recall (MQAR), as Zoology defines it (Arora et al., 2023,
arXiv 2312.04927; generator `multiquery_ar` in HazyResearch/zoology).

One example of length T with K pairs (vocabulary V, token 0 the filler):

    k1 v1 k2 v2 ... kK vK | 0 0 k3 0 k1 0 0 0 0 0 k2 0 ...
    context (2K tokens)     query region: (T - 2K) / 2 two-token slots

- Keys are K distinct tokens of {1, ..., V/2 - 1}, values K distinct tokens of
  {V/2, ..., V - 1}, drawn afresh for every example, so a key appears once in the context.
- Each key is queried exactly once. Its slot g (0-based, counted after the context) is
  drawn without replacement with P(g) proportional to (g + 1)^(a - 1); with the default
  a = 0.01 queries crowd right after the context with a long tail. Key j in context order
  takes the j-th draw, so the query order is random. A query key sits at position
  2K + 2g, the first token of its slot.
- Targets: at a query key's position the target is that key's value (next-token
  prediction); everywhere else IGNORE_INDEX. The value is not written after the query:
  the next input token is filler.
- `random_non_queries=True` (Zoology's default) replaces every filler 0 in the input by a
  uniform token of [0, V), which may collide with keys and values; False keeps zero
  filler, as the Zoology paper's Figure 2 and our Tier-0 settings do.
- `num_passes > 1` repeats the context block (the JRT variant); queries follow the last
  copy.

Zoology's own checks are kept: T even, V > T, and 2·K·passes + 2·K <= T.
Metric: accuracy at the query positions; every example has K of them, so the mean over
positions equals Zoology's mean over examples of the per-example fraction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import NamedSetting, check_batch_request, check_int, ignored_targets, random_subsets

FILLER = 0


@dataclass(frozen=True)
class MQAR:
    """MQAR task. vocab_size: V; seq_len: T (even); num_pairs: K; power_a: exponent a of
    the query-slot power law (1.0 places queries uniformly); num_passes: copies of the
    context block; random_non_queries: random instead of zero filler."""

    name: ClassVar[str] = "mqar"
    metric: ClassVar[str] = "accuracy"

    vocab_size: int = 8192
    seq_len: int = 64
    num_pairs: int = 4
    power_a: float = 0.01
    num_passes: int = 1
    random_non_queries: bool = True

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=4)
        check_int("seq_len", self.seq_len, minimum=2)
        check_int("num_pairs", self.num_pairs, minimum=1)
        check_int("num_passes", self.num_passes, minimum=1)
        if self.seq_len % 2:
            raise ValueError(f"seq_len: MQAR needs an even length (two-token query slots), got {self.seq_len}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(
                f"vocab_size: Zoology's MQAR needs vocab_size > seq_len, got {self.vocab_size} <= {self.seq_len}"
            )
        # With V > T this also leaves room for K distinct keys: K <= T/4 < V/4 <= V/2 - 1.
        needed = 2 * self.num_pairs * self.num_passes + 2 * self.num_pairs
        if needed > self.seq_len:
            raise ValueError(
                f"num_pairs: {self.num_pairs} pairs with {self.num_passes} pass(es) need seq_len >= {needed} "
                f"(context 2·K·passes plus a two-token slot per query), got seq_len {self.seq_len}"
            )
        if not isinstance(self.power_a, (int, float)) or not self.power_a > 0:
            raise ValueError(f"power_a: expected a float > 0, got {self.power_a!r}")

    @property
    def context_len(self) -> int:
        """Tokens of the key-value block(s): 2·K·passes."""
        return 2 * self.num_pairs * self.num_passes

    @property
    def num_slots(self) -> int:
        """Two-token query slots after the context: (T - 2·K·passes) / 2."""
        return (self.seq_len - self.context_len) // 2

    def slot_weights(self) -> torch.Tensor:
        """`[num_slots]` float64 probabilities of a single draw: a·(g+1)^(a-1), normalised."""
        g_plus_1 = torch.arange(1, self.num_slots + 1, dtype=torch.float64)
        weights = self.power_a * g_plus_1 ** (self.power_a - 1)
        return weights / weights.sum()

    def batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs `[B, T]` int64, targets `[B, T]` int64 (values at query positions, else
        IGNORE_INDEX). `split` is accepted for the common interface; held-out data comes
        from a held-out seed (see `base`)."""
        check_batch_request(batch_size, generator, split)
        B, T, K, half = batch_size, self.seq_len, self.num_pairs, self.vocab_size // 2
        keys = 1 + random_subsets(B, half - 1, K, generator)  # [B, K] in 1 .. V/2-1
        values = half + random_subsets(B, self.vocab_size - half, K, generator)  # [B, K] in V/2 .. V-1

        context = torch.stack([keys, values], dim=-1).reshape(B, 2 * K).repeat(1, self.num_passes)
        # Sequential weighted draws without replacement, as numpy's choice(p=...) makes them.
        slots = torch.multinomial(self.slot_weights().expand(B, -1), K, replacement=False, generator=generator)
        query_positions = self.context_len + 2 * slots  # [B, K]

        inputs = torch.full((B, T), FILLER, dtype=torch.long)
        inputs[:, : self.context_len] = context
        inputs.scatter_(1, query_positions, keys)
        targets = ignored_targets(B, T)
        targets.scatter_(1, query_positions, values)

        if self.random_non_queries:
            noise = torch.randint(self.vocab_size, (B, T), generator=generator)
            inputs = torch.where(inputs == FILLER, noise, inputs)
        return inputs, targets


# Tier 0 of the quality suite (research/quality-anchors.md §5.1): V 256 (keys 1-127,
# values 128-255), T 64, zero filler, 20k training and 1k held-out examples.
MQAR_SETTINGS: dict[str, NamedSetting] = {
    "T0-a": NamedSetting(
        task=MQAR(vocab_size=256, seq_len=64, num_pairs=8, random_non_queries=False),
        train_examples=20_000, eval_examples=1_000, steps=800,
        note="MQAR-easy: d 64, 1 head, short conv 4, 2 blocks with a 2x MLP; "
             "softmax >= 0.99, content-addressing formulations >= 0.95",
    ),
    "T0-b": NamedSetting(
        task=MQAR(vocab_size=256, seq_len=64, num_pairs=16, random_non_queries=False),
        train_examples=20_000, eval_examples=1_000, steps=1_000,
        note="MQAR-over-capacity: as T0-a with 8 heads of width 8; "
             "softmax >= 0.99, every fixed-state formulation clearly below it",
    ),
}
