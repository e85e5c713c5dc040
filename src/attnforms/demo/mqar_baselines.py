"""What MQAR accuracy a model without full lookup can reach, counted on generated batches.

- Window reach: a sliding window of W tokens per layer (the token and the W - 1 before
  it) sees only recent tokens. A query is within reach when its key lies inside the
  model's receptive field: with L layers, each window adds W - 1 tokens and each causal
  convolution of width c before a mixer (the demo's `block_conv`) adds c - 1, so the
  key may be at most `L·(W - 1 + c - 1)` tokens back. Without convolutions this is
  research/quality-anchors.md §5.1 T0-c's count (fewer than 2·W tokens back, for MQAR's
  even distances); the demo's conv of 4 widens it from 14 to 20 tokens. It is the most a
  sliding-window model can answer by lookup, so its accuracy should not exceed it by
  more than guessing.
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


def receptive_field(window: int, *, layers: int = 2, conv_size: int = 1) -> int:
    """How many tokens back `layers` blocks of (causal conv of `conv_size`, 1 for none,
    then a sliding window of `window` tokens) can see: `layers · (window - 1 + conv_size - 1)`."""
    for name, value in (("window", window), ("layers", layers), ("conv_size", conv_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return layers * (window - 1 + conv_size - 1)


def window_reach_fraction(task: MQAR, window: int, *, layers: int = 2, conv_size: int = 1,
                          examples: int = DEFAULT_EXAMPLES, seed: int = 0) -> float:
    """Fraction of queries whose key lies at most `receptive_field(window, layers,
    conv_size)` tokens before the query, over `examples` generated examples (seed `seed`)."""
    return fraction_within(task, receptive_field(window, layers=layers, conv_size=conv_size),
                           examples=examples, seed=seed)


def fraction_within(task: MQAR, tokens: int, *, examples: int = DEFAULT_EXAMPLES, seed: int = 0) -> float:
    """Fraction of queries whose key lies at most `tokens` tokens before the query, over
    `examples` generated examples (seed `seed`)."""
    if not isinstance(task, MQAR):
        raise TypeError(f"task: expected an MQAR task, got {type(task).__name__}")
    inputs, targets = task.batch(examples, generator_for(seed))
    distances = _query_key_distances(inputs, targets, task.context_len)
    return float((distances <= tokens).double().mean())


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


def direct_lookup_reach(window: int, *, conv_size: int = 1) -> int:
    """How far back a key may lie for the last sliding-window layer to look it up in one
    attention step: its value (one token after the key) must be among the `window`
    positions the layer reads, each of which mixes `conv_size` inputs, so the key is at
    most `window + conv_size - 1` tokens before the query. A key farther back (up to
    `receptive_field`) is reachable only if an earlier layer has already carried its pair
    forward, which it must do before it sees the query, for every pair it might be asked."""
    for name, value in (("window", window), ("conv_size", conv_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return window + conv_size - 1


@torch.no_grad()
def accuracy_by_distance(model, task: MQAR, *, examples: int = 1024, seed: int = 2**31 + 7,
                         batch_size: int = 256) -> dict[int, list[float]]:
    """`{distance: [share of the queries, accuracy]}` of `model` (token ids `[B, T]` ->
    output with `.logits` `[B, T, V]`, or logits) over `examples` examples from seed `seed`
    (by default a held-out seed), where distance = query position − key position."""
    if not isinstance(task, MQAR):
        raise TypeError(f"task: expected an MQAR task, got {type(task).__name__}")
    inputs, targets = task.batch(examples, generator_for(seed))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions = []
    for start in range(0, examples, batch_size):
        out = model(inputs[start:start + batch_size].to(device))
        predictions.append(getattr(out, "logits", out).argmax(-1).cpu())
    model.train(was_training)
    scored = targets != IGNORE_INDEX
    # Both are in row-major order of the scored positions, as the distances are.
    correct = (torch.cat(predictions) == targets)[scored].double()
    distances = _query_key_distances(inputs, targets, task.context_len)
    total = distances.numel()
    return {int(d): [float((distances == d).sum()) / total, float(correct[distances == d].mean())]
            for d in distances.unique().tolist()}


def banded_accuracy(by_distance: dict, bounds: dict[str, int]) -> dict[str, float | None]:
    """Accuracy over distance bands from `accuracy_by_distance`: `bounds` maps a band's
    name to its largest distance, in increasing order; each band holds the distances
    above the previous bound, and "beyond" the rest. None for an empty band."""
    bands, low = {}, 0
    for name, high in [*bounds.items(), ("beyond", float("inf"))]:
        cells = [(share, acc) for d, (share, acc) in by_distance.items() if low < int(d) <= high]
        weight = sum(share for share, _ in cells)
        bands[name] = sum(share * acc for share, acc in cells) / weight if weight else None
        low = high
    return bands
