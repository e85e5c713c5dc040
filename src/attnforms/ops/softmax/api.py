"""`softmax_attention` and its named configuration `sliding_window_attention`.

One op covers causal and bidirectional attention, cross-attention against a longer or
shorter key sequence, GQA / MQA, sliding windows, attention sinks, FlexAttention-style
`score_mod` / `mask_mod`, a KV cache carried between calls, and packed sequences.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ...core.dispatch import Family, forms_of
from ...core.run import check_common_options, default_options, run_op
from ...core.shapes import (
    Dims, check_positive_int, check_same_device, check_same_dtype, check_state, check_tensor,
)
from ...core.states import AttentionOutput, KVCache
from ...mods.block_mask import BlockMask
from . import reference

try:
    from . import triton as kernels
except ImportError:  # Triton is optional: without it only the reference runs.
    kernels = None

FAMILY = Family(
    name="softmax_attention",
    reference=forms_of(reference),
    triton={} if kernels is None else {
        "parallel": kernels.parallel, "chunk": kernels.chunk, "recurrent": kernels.recurrent},
    auto_form="parallel",
    variants=("sliding_window_attention",),
)


class SoftmaxOutput(NamedTuple):
    """What `softmax_attention(..., return_lse=True)` returns: `AttentionOutput`'s two
    fields and `lse [B, H, T]` float32 (`[1, H, T]` packed), the log-sum-exp of each
    query's visible (modified) scores, sink excluded, -inf where no key is visible. Two
    results over disjoint key sets combine as `lse = logaddexp(lse1, lse2)`,
    `o = e^{lse1 - lse} o1 + e^{lse2 - lse} o2` (computed without sinks; a sink σ then
    scales o by `e^{lse - logaddexp(lse, σ)}`). Not differentiable."""

    output: torch.Tensor
    final_state: KVCache | None
    lse: torch.Tensor


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int | None = None,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    block_mask: BlockMask | None = None,
    sinks: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: KVCache | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
    form: str = "auto",
    impl: str = "auto",
    return_lse: bool = False,
) -> AttentionOutput:
    """Softmax attention over absolute positions, with an optional KV cache.

    Positions: with a cache whose `next_position` is P (0 without one) the new keys take
    positions P .. P+S-1 and the queries are bottom-right aligned, query i at
    P + S - T + i (as when decoding against a cache). A query at position p sees a key
    at position j when: with `causal`, j <= p; with `window` W, also j > p - W; and when
    `mask_mod` keeps the pair. Per query head h (reading key/value head h // (H // G)):
    `s_j = score_mod(scale · q·k_j, b, h, p, j)`,
    `o = Σ_j e^{s_j} v_j / (e^{sinks[h]} + Σ_j e^{s_j})` over the visible keys (no sink
    term without `sinks`). A query that sees no key outputs 0.

    Mods follow FlexAttention's scalar signatures, `score_mod(score, b, h, q_idx, kv_idx)
    -> score` and `mask_mod(b, h, q_idx, kv_idx) -> bool` (True keeps the pair), but are
    called with broadcasting tensors: score `[B, H, T', L']`, b `[B, 1, 1, 1]`, h
    `[1, H, 1, 1]`, q_idx `[B, 1, T', 1]`, kv_idx `[B, 1, 1, L']` (int64 absolute
    positions; T', L' are block sizes). Write them with elementwise torch operations
    (`torch.where`, not `if`). With `cu_seqlens`, b is the sequence index and positions
    count from each sequence's start.

    Args:
        q: `[B, T, H, K]` queries.
        k: `[B, S, G, K]` keys, H % G == 0 (G < H: GQA, G == 1: MQA).
        v: `[B, S, G, V]` values.
        causal: mask keys after the query's position.
        window: None or W >= 1: also mask keys at W or more positions before the query
            (the query itself included, it sees W keys). Needs `causal=True`; for a
            two-sided window use a `mask_mod`.
        score_mod: None or a callable modifying scores (see above).
        mask_mod: None or a callable masking pairs, ANDed with causal and window.
            `attnforms.mods` has factories for the common ones and their combinators.
        block_mask: None or the `attnforms.mods.BlockMask` of `mask_mod` (built by
            `create_block_mask(mask_mod, B, H, T, S)`, the same function object), telling
            the kernel which tiles to skip. It must match the call: seq_lengths (T, S)
            (with cu_seqlens: both the longest sequence's length), batch rows 1 or B (N),
            heads 1 or H, no initial_state. The reference ignores it and applies
            `mask_mod` directly.
        sinks: None or `[H]` float logit per head joining the denominator with no value.
        scale: multiplies q; default `K ** -0.5`.
        initial_state: `KVCache(k [B, L, G, K], v [B, L, G, V] in q's dtype, positions
            [B, L] int64 (-1 for an empty slot), next_position [B] int64)` (`N` rows with
            cu_seqlens), or None for an empty cache.
        output_final_state: return the cache after the last token: the old cache and
            the new keys, with a window only the last W - 1 positions (all the next query
            can see besides itself), so decoding memory stays constant.
        cu_seqlens: `[N + 1]` int offsets of N packed sequences (then B == 1 and S == T).
        chunk_size: query and key block size of the chunk form (default 64).
        form: "parallel" | "chunk" | "recurrent" | "auto" (see `attnforms.core.dispatch`).
        impl: "reference" | "triton" | "auto".
        return_lse: also return the log-sum-exp of each query's visible scores (see
            `SoftmaxOutput`), to combine partial results.

    Returns:
        `AttentionOutput(output [B, T, H, V] in q's dtype, KVCache or None)`. The cache
        has its filled slots left-aligned in position order and is padded with empty
        slots only up to the fullest row, whatever the form, so states compare equal.
        With `return_lse=True`, a `SoftmaxOutput` (the same two fields and `lse`).
    """
    offsets = _validate(
        q, k, v, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
        cu_seqlens, chunk_size,
    )
    _check_block_mask(block_mask, mask_mod, q, k, offsets, initial_state)
    result = run_op(
        FAMILY, form=form, impl=impl, length=q.shape[1], device=q.device,
        per_token=dict(q=q, k=k, v=v),
        initial_state=initial_state, output_final_state=output_final_state, offsets=offsets,
        options=dict(
            causal=causal, window=window, score_mod=score_mod, mask_mod=mask_mod,
            block_mask=block_mask, sinks=sinks, **default_options(q.shape[-1], scale, chunk_size),
        ),
        # A packed sequence runs as batch row 0; its mods must still see b = its index.
        options_for_sequence=lambda n: dict(batch_offset=n),
    )
    output = AttentionOutput(result.output, result.final_state)
    if not return_lse:
        return output
    lse = getattr(result, "lse", None)
    if lse is None:  # the reference path: computed apart, with the same rule
        lse = reference.log_sum_exp(
            q, k, v, causal=causal, window=window, score_mod=score_mod, mask_mod=mask_mod,
            scale=default_options(q.shape[-1], scale, chunk_size)["scale"],
            initial_state=initial_state, offsets=offsets)
    return SoftmaxOutput(output.output, output.final_state, lse)


def sliding_window_attention(q, k, v, window: int, **kwargs) -> AttentionOutput:
    """Causal attention in which each query sees its last `window` positions, itself
    included: `softmax_attention` with `window` required. Same keywords and shapes."""
    check_positive_int("window", window, allow_none=False)
    return softmax_attention(q, k, v, window=window, **kwargs)


def _validate(q, k, v, causal, window, score_mod, mask_mod, sinks, scale, initial_state,
              cu_seqlens, chunk_size):
    """Check every argument; return the packed-sequence offsets (or None)."""
    for name, x in dict(q=q, k=k, v=v).items():
        check_tensor(name, x)
    dims = Dims()
    dims.bind("q", q, "B T H K")
    dims.bind("k", k, "B S G K")
    dims.bind("v", v, "B S G V")
    check_same_dtype(q=q, k=k, v=v)
    if dims["T"] == 0:
        raise ValueError("q: expected at least one token (T >= 1), got T = 0")
    if dims["S"] == 0:
        raise ValueError("k: expected at least one key (S >= 1), got S = 0")
    if dims["H"] % dims["G"] != 0:
        raise ValueError(
            f"k: expected a number of key/value heads G dividing the query heads "
            f"H = {dims['H']}, got G = {dims['G']}"
        )
    if sinks is not None:
        check_tensor("sinks", sinks)
        dims.bind("sinks", sinks, "H")
    check_same_device(q=q, k=k, v=v, sinks=sinks)
    _check_masking(causal, window, score_mod, mask_mod)
    offsets, batch = check_common_options(
        dims, scale=scale, chunk_size=chunk_size, cu_seqlens=cu_seqlens, device=q.device
    )
    if offsets is not None and dims["S"] != dims["T"]:
        raise ValueError(
            f"cu_seqlens: packs self-attention only (S == T), got S = {dims['S']}, T = {dims['T']}"
        )
    if initial_state is not None:
        _check_cache(initial_state, dims, batch, q)
    return offsets


def _check_masking(causal, window, score_mod, mask_mod) -> None:
    """The visibility arguments: a bool, a window that needs causality, two callables."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__} {causal!r}")
    check_positive_int("window", window)
    if window is not None and not causal:
        raise ValueError(
            f"window: expected causal=True (a window looks back from the query), got "
            f"window={window} with causal=False; for a two-sided window pass a mask_mod "
            f"such as `lambda b, h, q_idx, kv_idx: (q_idx - kv_idx).abs() < W`"
        )
    signatures = dict(
        score_mod="score_mod(score, b, h, q_idx, kv_idx) -> score",
        mask_mod="mask_mod(b, h, q_idx, kv_idx) -> bool",
    )
    for name, mod in dict(score_mod=score_mod, mask_mod=mask_mod).items():
        if mod is not None and not callable(mod):
            raise TypeError(f"{name}: expected a callable {signatures[name]}, got {type(mod).__name__}")


def _check_block_mask(block_mask, mask_mod, q, k, offsets, initial_state) -> None:
    """`block_mask`: a BlockMask built from this very `mask_mod` for this call's shape."""
    if block_mask is None:
        return
    if not isinstance(block_mask, BlockMask):
        raise TypeError(
            f"block_mask: expected an attnforms.mods.BlockMask (create_block_mask), got {type(block_mask).__name__}"
        )
    if block_mask.mask_mod is not mask_mod:
        raise ValueError(
            f"block_mask: expected the map of the mask_mod passed with it, but it was built from "
            f"{getattr(block_mask.mask_mod, '__name__', block_mask.mask_mod)!r} and mask_mod is "
            f"{getattr(mask_mod, '__name__', mask_mod)!r}; pass the same function object to both"
        )
    if initial_state is not None:
        raise ValueError(
            "block_mask: expected no initial_state (a BlockMask covers the positions of a call "
            "without a KV cache), got an initial_state"
        )
    B, T, H = q.shape[:3]
    lengths = (T, k.shape[1])
    if offsets is not None:
        B = len(offsets) - 1
        longest = max(b - a for a, b in zip(offsets, offsets[1:]))
        lengths = (longest, longest)
    if tuple(block_mask.seq_lengths) != lengths:
        where = " (the longest packed sequence)" if offsets is not None else ""
        raise ValueError(
            f"block_mask: expected seq_lengths (T, S) = {lengths}{where}, got {tuple(block_mask.seq_lengths)}"
        )
    Bm, Hm = block_mask.shape[:2]
    if Bm not in (1, B) or Hm not in (1, H):
        raise ValueError(
            f"block_mask: expected batch rows 1 or {B} and heads 1 or {H}, got {Bm} and {Hm}"
        )
    if block_mask.device != q.device:
        raise ValueError(f"block_mask: expected tensors on {q.device}, got {block_mask.device}")


def _check_cache(state, dims: Dims, batch: str, q: torch.Tensor) -> None:
    """`initial_state`: a KVCache of the right shapes, k / v in q's dtype, int64 positions,
    everything on q's device."""
    check_state(state, KVCache, dims, {
        "k": f"{batch} L G K", "v": f"{batch} L G V", "positions": f"{batch} L",
        "next_position": batch,
    }, q.device)
    for field, dtype in dict(k=q.dtype, v=q.dtype, positions=torch.int64, next_position=torch.int64).items():
        value = getattr(state, field)
        if value.dtype != dtype:
            raise TypeError(f"initial_state.{field}: expected dtype {dtype}, got {value.dtype}")

