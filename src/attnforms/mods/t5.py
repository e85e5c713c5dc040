"""T5 relative position bias: a learned scalar per head and log-spaced distance bucket."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._naming import check_captured, check_int, named


def t5_bucket(relative_position: torch.Tensor, *, num_buckets: int, bidirectional: bool,
              max_distance: int) -> torch.Tensor:
    """T5's bucket of each `relative_position = kv_idx - q_idx` (int tensor, any shape).

    With `bidirectional`, half of the buckets are for keys ahead of the query (the upper
    half) and half for keys at or behind it. Within a half of `nb` buckets, a distance
    `n < nb / 2` has its own bucket; larger distances share buckets spaced
    logarithmically up to `max_distance`, beyond which everything falls into the last
    bucket. The logarithm is taken in float32 and truncated, as in T5's code, so the
    bucket boundaries match checkpoints trained with it.
    """
    n = -relative_position.to(torch.int64)
    bucket = torch.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).to(torch.int64) * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    ratio = torch.log(n.to(torch.float32).clamp(min=1.0) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (ratio * (num_buckets - max_exact)).to(torch.int64)).clamp(max=num_buckets - 1)
    return bucket + torch.where(n < max_exact, n, large)


def _thresholds(num_buckets: int, bidirectional: bool, max_distance: int) -> list[int]:
    """The smallest distance of each bucket after the first within one half: the bucket of
    distance n is the number of thresholds <= n (the bucket grows monotonically with n
    and saturates by n = max_distance)."""
    distances = torch.arange(max_distance + 1)
    buckets = t5_bucket(-distances, num_buckets=num_buckets, bidirectional=bidirectional,
                        max_distance=max_distance).tolist()
    return [n for n in range(1, max_distance + 1) if buckets[n] != buckets[n - 1]]


def t5_relative_bias(table: torch.Tensor, *, bidirectional: bool = True,
                     max_distance: int = 128) -> Callable:
    """`score_mod` adding `table[h, bucket(kv_idx - q_idx)]` (T5's relative attention bias).

    The bucketing is done inside the mod with comparisons and additions only (the bucket
    of a distance is how many precomputed bucket boundaries it reaches), so no integer
    conversion or lookup table is needed and the mod stays within the mod contract.
    T5 applies this bias without scaling the scores (`scale=1.0` in the call to match it).

    Args:
        table: `[H, num_buckets]` float, one learned bias per head and bucket (T5 stores
            it as an embedding `[num_buckets, H]`: pass its transpose). Gradients flow
            into it. On the device of the call.
        bidirectional: encoder-style buckets for both directions (num_buckets must be
            even); False for a decoder (keys ahead of the query share bucket 0).
        max_distance: distances at or beyond it fall into the last bucket (T5: 128).

    Source: Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer" (JMLR 2020); bucketing restated from the T5 / Mesh
    TensorFlow code from memory (not covered by the project's research notes); the
    tests check it against an independent per-element restatement of that formula.
    """
    check_captured("table", table, ndims=(2,), floating=True)
    num_buckets = table.shape[1]
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional: expected a bool, got {type(bidirectional).__name__}")
    half = num_buckets // 2 if bidirectional else num_buckets
    if bidirectional and num_buckets % 2:
        raise ValueError(f"table: expected an even number of buckets with bidirectional=True, got {num_buckets}")
    if half < 2:
        raise ValueError(f"table: expected at least {4 if bidirectional else 2} buckets, got {num_buckets}")
    check_int("max_distance", max_distance, minimum=half // 2 + 1)
    steps = _thresholds(num_buckets, bidirectional, max_distance)

    def t5_bias(score, b, h, q_idx, kv_idx):
        if bidirectional:  # a construction-time constant, not an argument
            distance = torch.abs(q_idx - kv_idx)
            bucket = (kv_idx > q_idx) * half
        else:
            distance = torch.clamp(q_idx - kv_idx, 0)
            bucket = distance * 0
        for step in steps:
            bucket = bucket + (distance >= step)
        return score + table[h, bucket]

    name = f"t5_relative_bias(table[{table.shape[0]}, {num_buckets}], bidirectional={bidirectional}, max_distance={max_distance})"
    return named(t5_bias, name)
