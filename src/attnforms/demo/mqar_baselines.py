"""What MQAR accuracy a model without full lookup can reach, counted on generated batches.

- Window reach: a sliding window of W tokens per layer sees only recent tokens. Following
  research/quality-anchors.md §5.1 (T0-c), a query counts as within reach when its key
  sits fewer than 2·W tokens before it (two layers of windows). A sliding-window model
  should land near this fraction.
- Chance without lookup: a model that cannot use the query token to address memory
  (Aaren, whose query is a learned constant) can still learn which tokens are values
  and which values the context holds; guessing uniformly among those is right with
  probability 1 / (distinct values in the context) = 1 / K. The uniform guess over the
  whole value vocabulary, 1 / (V - V/2), is the lower floor.

Shape legend: `B` batch, `T` sequence length.
"""
from __future__ import annotations

import torch

from ..tasks import IGNORE_INDEX, MQAR, generator_for

DEFAULT_EXAMPLES = 4096


def _query_key_distances(inputs: torch.Tensor, targets: torch.Tensor, context_len: int) -> torch.Tensor:
    """Distances (query position − key position), one per scored query, int64 `[Q]`.

    inputs, targets: `[B, T]` MQAR batch; the key of a query is the context position
    (before `context_len`) holding the same token."""
    rows, query_positions = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    query_tokens = inputs[rows, query_positions]  # [Q]
    context = inputs[rows, :context_len]  # [Q, context_len]
    matches = context == query_tokens[:, None]
    if not bool(matches.any(dim=1).all()):
        raise ValueError("inputs: a query token does not occur in its context block")
    # The last occurrence: with several passes the nearest copy of the key counts.
    last = context_len - 1 - matches.flip(1).float().argmax(dim=1)
    return query_positions - last


def window_reach_fraction(task: MQAR, window: int, *, layers: int = 2, examples: int = DEFAULT_EXAMPLES,
                          seed: int = 0) -> float:
    """Fraction of queries whose key lies fewer than `layers · window` tokens before the
    query, over `examples` generated examples (seed `seed`)."""
    if not isinstance(task, MQAR):
        raise TypeError(f"task: expected an MQAR task, got {type(task).__name__}")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    inputs, targets = task.batch(examples, generator_for(seed))
    distances = _query_key_distances(inputs, targets, task.context_len)
    return float((distances < layers * window).double().mean())


def chance_accuracy(task: MQAR, *, examples: int = DEFAULT_EXAMPLES, seed: int = 0) -> dict[str, float]:
    """Accuracy of guessing without lookup, over `examples` generated examples:
    `{"context_values": mean over queries of 1 / distinct values in the example's
    context, "value_vocabulary": 1 / number of value tokens}`."""
    if not isinstance(task, MQAR):
        raise TypeError(f"task: expected an MQAR task, got {type(task).__name__}")
    inputs, targets = task.batch(examples, generator_for(seed))
    half = task.vocab_size // 2
    context = inputs[:, : task.context_len]
    is_value = context >= half
    # Distinct values per row: sort, then count positions that differ from their left neighbour.
    marked = torch.where(is_value, context, torch.full_like(context, -1)).sort(dim=1).values
    distinct = ((marked[:, 1:] != marked[:, :-1]) & (marked[:, 1:] >= 0)).sum(1) + (marked[:, 0] >= 0).long()
    queries_per_row = (targets != IGNORE_INDEX).sum(1)
    per_query = (queries_per_row / distinct.clamp(min=1)).sum() / queries_per_row.sum()
    return {"context_values": float(per_query), "value_vocabulary": 1.0 / (task.vocab_size - half)}
