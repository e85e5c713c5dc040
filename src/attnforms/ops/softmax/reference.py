"""Softmax attention in pure PyTorch: the correctness oracle, in three exact forms.

Every key and query carries an absolute position. With a cache whose next position is P
(0 without one), the S new keys take positions P .. P+S-1 and the T queries are
bottom-right aligned: query i sits at P + S - T + i. A query at position p sees a key at
position j when the slot is filled (j >= 0), and with `causal` when j <= p, with a window
W also when j > p - W, and when `mask_mod` keeps the pair. Per head h and query:

    s_j = score_mod(scale · q·k_j, b, h, p, j)
    o   = Σ_{j visible} e^{s_j} v_j / (e^{sink_h} + Σ_{j visible} e^{s_j})

with the sink term only when `sinks` is given, and o = 0 when nothing is visible. See
README.md for the derivations of the forms and the cache layout.

All three forms take the same arguments:
    q: `[B, T, H, K]`, k: `[B, S, G, K]`, v: `[B, S, G, V]` (H % G == 0), causal: bool,
    window: int or None, score_mod, mask_mod: callables or None, sinks: `[H]` or None,
    scale: float, initial_state: KVCache or None, output_final_state: bool,
    chunk_size: int, batch_offset: the value `b` takes for batch row 0 (the sequence
    index when run per packed sequence), block_mask: ignored (the tile map is for
    kernels; the reference applies `mask_mod` to every pair).
They compute in float32 (float64 for float64 inputs) and return
`AttentionOutput(output [B, T, H, V] in the input dtype, KVCache or None)`.

The mods are called once per block with broadcasting index tensors, not once per
element: score `[B, H, T', L']`, b `[B, 1, 1, 1]`, h `[1, H, 1, 1]`, q_idx
`[B, 1, T', 1]`, kv_idx `[B, 1, 1, L']` (int64 absolute positions), so they must be
written with elementwise torch operations.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ...core.shapes import compute_dtype
from ...core.states import AttentionOutput, KVCache

EMPTY = -1  # position of an empty cache slot


class _Keys(NamedTuple):
    """Keys and values in time order with their positions.

    k: `[B, L, G, K]`, v: `[B, L, G, V]` (compute dtype), positions: `[B, L]` int64,
    EMPTY for a slot that holds nothing.
    """

    k: torch.Tensor
    v: torch.Tensor
    positions: torch.Tensor

    def slots(self, part: slice) -> "_Keys":
        return _Keys(*(x[:, part] for x in self))


class _Problem(NamedTuple):
    """One call's inputs in compute form.

    q: `[B, H, T, K]` scaled queries, q_pos: `[B, T]` their positions, cache: the initial
    cache, new: the S new keys, next_position: `[B]` the position after the last new key,
    sinks: `[H]` or None.
    """

    q: torch.Tensor
    q_pos: torch.Tensor
    cache: _Keys
    new: _Keys
    next_position: torch.Tensor
    sinks: torch.Tensor | None


class _Rule(NamedTuple):
    """Which keys a query sees and how its scores are modified."""

    causal: bool
    window: int | None
    score_mod: Callable | None
    mask_mod: Callable | None
    batch_offset: int

    def visible(self, q_pos, kv_pos, heads):
        """q_pos `[B, T]`, kv_pos `[B, L]` -> bool `[B, 1 or H, T or 1, L]` (broadcasts
        to `[B, H, T, L]`)."""
        b, h, q_idx, kv_idx = self.coordinates(q_pos, kv_pos, heads)
        keep = kv_idx != EMPTY
        if self.causal:
            keep = keep & (kv_idx <= q_idx)
        if self.window is not None:
            keep = keep & (kv_idx > q_idx - self.window)
        if self.mask_mod is not None:
            keep = keep & self.mask_mod(b, h, q_idx, kv_idx)
        return keep

    def scores(self, q, k, q_pos, kv_pos, keep):
        """q `[B, H, T, K]` (scaled), k `[B, H, L, K]`, keep from `visible` ->
        `[B, H, T, L]` modified scores, -inf where not visible."""
        scores = q @ k.transpose(-1, -2)
        if self.score_mod is not None:
            # A mod may promote (a float64 table captured in a float32 call): back to the
            # compute dtype, as a kernel computing in float32 would.
            modified = self.score_mod(scores, *self.coordinates(q_pos, kv_pos, q.shape[1]))
            scores = modified.to(scores.dtype)
        return scores.masked_fill(~keep, float("-inf"))

    def coordinates(self, q_pos, kv_pos, heads):
        """The mods' index arguments: b `[B, 1, 1, 1]`, h `[1, H, 1, 1]`, q_idx
        `[B, 1, T, 1]`, kv_idx `[B, 1, 1, L]`, all int64."""
        device = q_pos.device
        b = self.batch_offset + torch.arange(q_pos.shape[0], device=device)
        h = torch.arange(heads, device=device)
        return b.view(-1, 1, 1, 1), h.view(1, -1, 1, 1), q_pos[:, None, :, None], kv_pos[:, None, None, :]


class _Running(NamedTuple):
    """The online-softmax triple of every query row.

    m: `[B, H, T, 1]` running max of the scores read so far (sink included), detached:
       it only stabilises, the result does not depend on it; -inf before anything.
    l: `[B, H, T, 1]` `e^{sink - m} + Σ e^{s_j - m}`, the denominator.
    acc: `[B, H, T, V]` `Σ e^{s_j - m} v_j`, the numerator.
    """

    m: torch.Tensor
    l: torch.Tensor
    acc: torch.Tensor


def parallel(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
             output_final_state, chunk_size, batch_offset=0, block_mask=None):
    """One masked `[B, H, T, L]` score matrix over the cache and the new keys at once."""
    problem = _prepare(q, k, v, sinks, scale, initial_state)
    rule = _Rule(causal, window, score_mod, mask_mod, batch_offset)
    keys = _concat(problem.cache, problem.new)
    running = _read(_start(problem, rows=slice(None)), rule, problem.q, problem.q_pos, keys)
    return _finish(_result(running), keys, problem, window, output_final_state, v.dtype)


def chunk(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
          output_final_state, chunk_size, batch_offset=0, block_mask=None):
    """Flash-attention style: blocks of `chunk_size` queries read blocks of `chunk_size`
    keys with an online softmax; no `T x L` matrix is ever formed."""
    problem = _prepare(q, k, v, sinks, scale, initial_state)
    rule = _Rule(causal, window, score_mod, mask_mod, batch_offset)
    keys = _concat(problem.cache, problem.new)
    outputs = []
    for q_start in range(0, q.shape[1], chunk_size):
        rows = slice(q_start, q_start + chunk_size)
        running = _start(problem, rows=rows)
        for kv_start in range(0, keys.positions.shape[1], chunk_size):
            running = _read(running, rule, problem.q[:, :, rows], problem.q_pos[:, rows],
                            keys.slots(slice(kv_start, kv_start + chunk_size)))
        outputs.append(_result(running))
    return _finish(torch.cat(outputs, dim=2), keys, problem, window, output_final_state, v.dtype)


def recurrent(q, k, v, *, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
              output_final_state, chunk_size, batch_offset=0, block_mask=None):
    """Query by query against a KV cache that grows as keys become visible and, with a
    window, drops what no later query can see, so its size stays bounded by the window."""
    problem = _prepare(q, k, v, sinks, scale, initial_state)
    rule = _Rule(causal, window, score_mod, mask_mod, batch_offset)
    T, S = q.shape[1], k.shape[1]
    cache, appended, outputs = problem.cache, 0, []
    for i in range(T):
        # Bottom-right alignment: query i sits at the position of new key S - T + i, so
        # the keys up to that one are in before it reads; without causality all of them.
        ready = min(S, max(0, S - T + i + 1)) if causal else S
        cache = _concat(cache, problem.new.slots(slice(appended, ready)))
        cache = _canonical(cache, problem.q_pos[:, i], window)
        appended = ready
        rows = slice(i, i + 1)
        running = _read(_start(problem, rows=rows), rule, problem.q[:, :, rows],
                        problem.q_pos[:, rows], cache)
        outputs.append(_result(running))
    return _finish(torch.cat(outputs, dim=2), cache, problem, window, output_final_state, v.dtype)


def log_sum_exp(q, k, v, *, causal, window, score_mod, mask_mod, scale, initial_state,
                offsets=None) -> torch.Tensor:
    """`[B, H, T]` float32 log-sum-exp of each query's visible modified scores (no sink),
    -inf where nothing is visible: what `return_lse=True` returns. With `offsets` (packed
    sequences, B == 1) each sequence is computed apart, b = its index."""
    if offsets is not None:
        parts = []
        for n, (start, end) in enumerate(zip(offsets, offsets[1:])):
            state = None if initial_state is None else type(initial_state)(
                *(x[n:n + 1] for x in initial_state))
            parts.append(_log_sum_exp(q[:, start:end], k[:, start:end], v[:, start:end], causal,
                                      window, score_mod, mask_mod, scale, state, n))
        return torch.cat(parts, dim=2)
    return _log_sum_exp(q, k, v, causal, window, score_mod, mask_mod, scale, initial_state, 0)


def _log_sum_exp(q, k, v, causal, window, score_mod, mask_mod, scale, initial_state, batch_offset):
    problem = _prepare(q, k, v, None, scale, initial_state)
    rule = _Rule(causal, window, score_mod, mask_mod, batch_offset)
    keys = _concat(problem.cache, problem.new)
    heads = problem.q.shape[1]
    keep = rule.visible(problem.q_pos, keys.positions, heads)
    scores = rule.scores(problem.q, _heads(keys.k, heads), problem.q_pos, keys.positions, keep)
    return torch.logsumexp(scores, dim=-1).float()


def _prepare(q, k, v, sinks, scale, initial_state) -> _Problem:
    """Upcast to the compute dtype, put heads before time for q, and place every key."""
    dtype = compute_dtype(q.dtype)
    B, T, _, K = q.shape
    S, G, V = k.shape[1], k.shape[2], v.shape[-1]
    if initial_state is None:
        start = torch.zeros(B, dtype=torch.int64, device=q.device)
        cache = _Keys(
            q.new_zeros(B, 0, G, K, dtype=dtype), q.new_zeros(B, 0, G, V, dtype=dtype),
            torch.zeros(B, 0, dtype=torch.int64, device=q.device),
        )
    else:
        start = initial_state.next_position
        filled = (initial_state.positions != EMPTY)[..., None, None]
        # Empty slots may hold anything (uninitialised memory); zero them so that a zero
        # attention weight times garbage cannot turn into NaN.
        cache = _Keys(
            torch.where(filled, initial_state.k.to(dtype), 0.0),
            torch.where(filled, initial_state.v.to(dtype), 0.0),
            initial_state.positions,
        )
    steps = torch.arange(max(S, T), device=q.device)
    new = _Keys(k.to(dtype), v.to(dtype), start[:, None] + steps[:S])
    q_pos = start[:, None] + (S - T) + steps[:T]
    q = q.to(dtype).transpose(1, 2) * scale
    sinks = None if sinks is None else sinks.to(dtype)
    return _Problem(q, q_pos, cache, new, start + S, sinks)


def _concat(a: _Keys, b: _Keys) -> _Keys:
    return _Keys(*(torch.cat(pair, dim=1) for pair in zip(a, b)))


def _canonical(keys: _Keys, horizon: torch.Tensor, window: int | None) -> _Keys:
    """The cache a query at position `horizon` `[B]` and every later one can still use:
    with a window only positions `> horizon - window`, all filled slots otherwise.

    keys may hold empty slots anywhere. Returns the canonical layout every form agrees
    on: filled slots left-aligned in position order, EMPTY slots (zero k and v) only up to
    the fullest row. For the final state `horizon` is the next position, which leaves at
    most `window - 1` tokens.
    """
    keep = keys.positions != EMPTY
    if window is not None:
        keep = keep & (keys.positions > horizon[:, None] - window)
    # Sorting kept slots by position and dropped ones to the end (int64 max) left-aligns
    # each row in one vectorised step.
    order_key = torch.where(keep, keys.positions, torch.iinfo(torch.int64).max)
    slots = int(keep.sum(dim=1).max())
    order = order_key.argsort(dim=1, stable=True)[:, :slots]
    kept = keep.gather(1, order)

    def pick(x):  # [B, L, G, D] -> [B, slots, G, D]
        index = order[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.where(kept[:, :, None, None], x.gather(1, index), 0.0)

    positions = torch.where(kept, keys.positions.gather(1, order), EMPTY)
    return _Keys(pick(keys.k), pick(keys.v), positions)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """`[B, L, G, D]` -> `[B, H, L, D]`: query head h reads key/value head h // (H // G)."""
    return x.transpose(1, 2).repeat_interleave(heads // x.shape[2], dim=1)


def _start(problem: _Problem, *, rows: slice) -> _Running:
    """The triple before any key is read, for the query rows `rows`: a sink enters as a
    score of value `sink_h` with a zero value vector."""
    B, H, _, _ = problem.q.shape
    T = problem.q_pos[:, rows].shape[1]
    q = problem.q
    acc = q.new_zeros(B, H, T, problem.new.v.shape[-1])
    if problem.sinks is None:
        return _Running(q.new_full((B, H, T, 1), float("-inf")), q.new_zeros(B, H, T, 1), acc)
    sink = problem.sinks.view(1, H, 1, 1).expand(B, H, T, 1)
    m = sink.detach()
    return _Running(m, torch.exp(sink - _finite_or_zero(m)), acc)


def _read(running: _Running, rule: _Rule, q, q_pos, keys: _Keys) -> _Running:
    """Fold the keys `keys` (`[B, L, ...]`) into the triple of queries q `[B, H, T, K]` at
    q_pos `[B, T]`. A block with no visible pair would leave the triple unchanged
    (rescaling by e^0, adding 0), so it is skipped: the block sparsity of flash kernels."""
    heads = q.shape[1]
    keep = rule.visible(q_pos, keys.positions, heads)
    if not bool(keep.any()):
        return running
    scores = rule.scores(q, _heads(keys.k, heads), q_pos, keys.positions, keep)
    m = torch.maximum(running.m, scores.detach().amax(dim=-1, keepdim=True))
    shift = _finite_or_zero(m)
    # Rescale what was accumulated under the old max to the new one: e^{m_old - m_new} <= 1.
    decay = torch.exp(running.m - shift)
    weights = torch.exp(scores - shift)
    l = decay * running.l + weights.sum(dim=-1, keepdim=True)
    acc = decay * running.acc + weights @ _heads(keys.v, heads)
    return _Running(m, l, acc)


def _result(running: _Running) -> torch.Tensor:
    """`[B, H, T, V]` outputs: numerator over denominator; 0 for a row that read nothing
    (l = 0), with the division kept finite so its gradient is 0 rather than NaN."""
    empty = running.l == 0
    return running.acc / torch.where(empty, 1.0, running.l)


def _finite_or_zero(m: torch.Tensor) -> torch.Tensor:
    """The max to subtract: rows whose max is -inf (nothing read) subtract 0 instead, so
    no `-inf - (-inf)` makes a NaN."""
    return torch.where(torch.isfinite(m), m, 0.0)


def _finish(o, keys: _Keys, problem: _Problem, window, output_final_state, dtype):
    """`o [B, H, T, V]` back to `[B, T, H, V]` in the input `dtype`; the canonical cache
    of `keys` (everything seen, old cache included) when asked for."""
    state = None
    if output_final_state:
        cache = _canonical(keys, problem.next_position, window)
        state = KVCache(cache.k.to(dtype), cache.v.to(dtype), cache.positions, problem.next_position)
    return AttentionOutput(o.transpose(1, 2).to(dtype), state)
